"""The Prometheus gauges of continuous optimisation, read at scrape time (OpenTelemetry
observable gauges on the meter serving.wiring passes in): the drift window and the rollout's
shadow agreement and canary arms.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from router.continuous.arms import ShadowBook
from router.continuous.drift import STATE_CODES, DriftMonitor


def register_drift_gauges(meter: Any, monitor: Any) -> None:
    """Observable gauges read at scrape time: `monitor` is a DriftMonitor or a zero-argument
    callable returning the current one (after a reload the gateway may swap monitors).

      slm_router_drift_psi{metric}             PSI per metric (absent until there is data)
      slm_router_drift_state                   -1 no data/reference, 0 ok, 1 warn, 2 alert
      slm_router_drift_window_samples          requests in the window
      slm_router_drift_rate{metric,source}     out-of-scope / escalation rate, live and reference
    """

    def current() -> DriftMonitor:
        return monitor() if callable(monitor) else monitor  # type: ignore[no-any-return]

    def psi_cb(_: CallbackOptions) -> Iterable[Observation]:
        for name, m in current().snapshot().metrics.items():
            if m.psi is not None:
                yield Observation(m.psi, {"metric": name})

    def state_cb(_: CallbackOptions) -> Iterable[Observation]:
        yield Observation(STATE_CODES[current().snapshot().state])

    def samples_cb(_: CallbackOptions) -> Iterable[Observation]:
        yield Observation(len(current()))

    def rate_cb(_: CallbackOptions) -> Iterable[Observation]:
        for name in ("out_of_scope", "escalation"):
            m = current().snapshot().metrics.get(name)
            if m is None or m.live is None or m.reference is None:
                continue
            yield Observation(m.live["rate"], {"metric": name, "source": "live"})
            yield Observation(m.reference["rate"], {"metric": name, "source": "reference"})

    meter.create_observable_gauge(
        "slm_router_drift_psi",
        [psi_cb],
        description="PSI of the classifier's outputs vs its reference",
    )
    meter.create_observable_gauge(
        "slm_router_drift_state", [state_cb], description="-1 no data, 0 ok, 1 warn, 2 alert"
    )
    meter.create_observable_gauge(
        "slm_router_drift_window_samples", [samples_cb], description="Requests in the drift window"
    )
    meter.create_observable_gauge(
        "slm_router_drift_rate", [rate_cb], description="Out-of-scope and escalation rates"
    )


def register_rollout_gauges(meter: Any, caller: Any) -> None:
    """`caller` is a RolloutCaller or a zero-argument callable returning the current one.

    slm_router_shadow_compared, slm_router_shadow_agreement (0-1, absent before a comparison),
    slm_router_canary_requests{arm}.
    """

    def book() -> ShadowBook:
        return (caller() if callable(caller) else caller).book  # type: ignore[no-any-return]

    def compared(_: CallbackOptions) -> Iterable[Observation]:
        yield Observation(book().compared)

    def agreement(_: CallbackOptions) -> Iterable[Observation]:
        rate = book().agreement_rate
        if rate is not None:
            yield Observation(rate)

    def arms(_: CallbackOptions) -> Iterable[Observation]:
        for arm, n in book().arms.items():
            yield Observation(n, {"arm": arm})

    meter.create_observable_gauge(
        "slm_router_shadow_compared", [compared], description="Shadow comparisons on this replica"
    )
    meter.create_observable_gauge(
        "slm_router_shadow_agreement", [agreement], description="Candidate/live agreement rate"
    )
    meter.create_observable_gauge(
        "slm_router_canary_requests", [arms], description="Requests per canary arm"
    )
