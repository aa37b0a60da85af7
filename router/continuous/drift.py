"""Drift of the classifier's outputs: rolling windows compared with the training-time reference.

What is watched (each over the last `window` routed requests of this ingress replica):
  domain_mix     the predicted label, out-of-scope counted as its own label
  confidence     the top label's confidence, in the reference's 10 bins over [0, 1]
  out_of_scope   the out-of-scope rate (two bins: flagged / not)
  escalation     the escalation rate: escalate score >= the escalation artifact's threshold
                 (only when the policy has an escalation artifact with a reference)

The measure is the population stability index, the credit-scoring industry's standard for
"has this distribution moved":

    PSI = sum_i (live_i - ref_i) * ln(live_i / ref_i)

over the bins' shares. It is a symmetrised KL divergence, 0 for identical distributions, and
has well-known rules of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 a large one. An
empty bin would make the logarithm infinite, so every share is floored at EPSILON (1e-4) first;
that caps one bin's contribution at about |share| * 9.2 and keeps small windows finite.

The alert state needs `min_samples` in the window before it says anything: PSI from a handful
of requests is noise. Thresholds come from the policy's `drift:` section (DriftPolicy).

The reference (router.continuous.reference) is the classifier's output distribution at
training time; without one, drift stays "no_reference".

Each ingress replica keeps its own window, and a hot reload builds a new monitor: a new
classifier starts a fresh window. Observing is O(1) (counters updated on entry and eviction);
PSI is computed only when asked (a /metrics scrape or a status call), O(labels).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from router.continuous.reference import OOS_LABEL, DriftReference, reference_for_spec
from router.continuous.spec import DriftPolicy

EPSILON = 1e-4
DEFAULT_BINS: tuple[float, ...] = tuple(i / 10 for i in range(11))
State = Literal["ok", "warn", "alert", "insufficient_data", "no_reference", "off"]
STATE_CODES: dict[str, int] = {
    "off": -2,
    "no_reference": -1,
    "insufficient_data": -1,
    "ok": 0,
    "warn": 1,
    "alert": 2,
}


# ---- the measure ---------------------------------------------------------------------------


def shares(counts: Mapping[str, float] | Sequence[float]) -> list[float]:
    values = list(counts.values()) if isinstance(counts, Mapping) else list(counts)
    total = float(sum(values))
    return [v / total if total > 0 else 0.0 for v in values]


def psi(live: Sequence[float], reference: Sequence[float], epsilon: float = EPSILON) -> float:
    """Population stability index of two share vectors over the same bins (see module doc)."""
    if len(live) != len(reference):
        raise ValueError(f"bins differ: {len(live)} live vs {len(reference)} reference")
    total = 0.0
    for a, e in zip(live, reference, strict=True):
        a, e = max(a, epsilon), max(e, epsilon)
        total += (a - e) * math.log(a / e)
    return total


def psi_categorical(live: Mapping[str, float], reference: Mapping[str, float]) -> float:
    """PSI over the union of categories: a label never seen in the reference is drift too."""
    keys = sorted(set(live) | set(reference))
    lv = shares({k: live.get(k, 0.0) for k in keys})
    rv = shares({k: reference.get(k, 0.0) for k in keys})
    return psi(lv, rv)


def rate_psi(live_rate: float, reference_rate: float) -> float:
    return psi([live_rate, 1 - live_rate], [reference_rate, 1 - reference_rate])


def bin_index(value: float, edges: Sequence[float]) -> int:
    """numpy.histogram's convention: [e0, e1), ..., [e_{n-1}, e_n] (the last bin is closed)."""
    n = len(edges) - 1
    if value >= edges[-1]:
        return n - 1
    for i in range(n):
        if value < edges[i + 1]:
            return i
    return n - 1


# ---- the window ----------------------------------------------------------------------------


class ClassificationLike(Protocol):
    @property
    def label(self) -> str: ...

    @property
    def confidence(self) -> float: ...

    @property
    def out_of_scope(self) -> bool: ...

    @property
    def escalate(self) -> float | None: ...


@dataclass(frozen=True)
class _Obs:
    label: str
    conf_bin: int
    oos: bool
    escalated: bool | None


@dataclass(frozen=True)
class MetricDrift:
    name: str
    psi: float | None
    state: State
    live: Mapping[str, float] | None = None
    reference: Mapping[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "psi": None if self.psi is None else round(self.psi, 6),
            "state": self.state,
            "live": None if self.live is None else {k: round(v, 6) for k, v in self.live.items()},
            "reference": None
            if self.reference is None
            else {k: round(v, 6) for k, v in self.reference.items()},
        }


@dataclass(frozen=True)
class DriftSnapshot:
    state: State
    samples: int
    window: int
    metrics: Mapping[str, MetricDrift]
    thresholds: Mapping[str, float]
    reference_source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "alert": self.state == "alert",
            "samples": self.samples,
            "window": self.window,
            "thresholds": dict(self.thresholds),
            "reference": self.reference_source,
            "metrics": {k: m.to_dict() for k, m in self.metrics.items()},
        }


@dataclass
class _Counts:
    labels: dict[str, int] = field(default_factory=dict)
    conf: list[int] = field(default_factory=list)
    oos: int = 0
    esc_known: int = 0
    escalated: int = 0

    def add(self, o: _Obs, sign: int) -> None:
        self.labels[o.label] = self.labels.get(o.label, 0) + sign
        if self.labels[o.label] == 0:
            del self.labels[o.label]
        self.conf[o.conf_bin] += sign
        self.oos += sign * int(o.oos)
        if o.escalated is not None:
            self.esc_known += sign
            self.escalated += sign * int(o.escalated)


class DriftMonitor:
    """The rolling window of one classifier's outputs and its comparison with the reference."""

    def __init__(self, policy: DriftPolicy, reference: DriftReference | None) -> None:
        self.policy = policy
        self.reference = reference
        self.edges: tuple[float, ...] = reference.confidence_bins if reference else DEFAULT_BINS
        self._window: deque[_Obs] = deque()
        self._counts = _Counts(conf=[0] * (len(self.edges) - 1))
        self.observed_total = 0

    def __len__(self) -> int:
        return len(self._window)

    def observe(self, c: ClassificationLike) -> None:
        """One routed request's classification. O(1); never raises on odd values."""
        if not self.policy.enabled:
            return
        oos_label = self.reference.oos_label if self.reference else OOS_LABEL
        threshold = self.reference.escalation_threshold if self.reference else None
        conf = c.confidence if math.isfinite(c.confidence) else 0.0
        escalated = None
        if threshold is not None and c.escalate is not None:
            escalated = c.escalate >= threshold
        obs = _Obs(
            oos_label if c.out_of_scope else c.label,
            bin_index(min(max(conf, 0.0), 1.0), self.edges),
            bool(c.out_of_scope),
            escalated,
        )
        self._window.append(obs)
        self._counts.add(obs, +1)
        self.observed_total += 1
        if len(self._window) > self.policy.window:
            self._counts.add(self._window.popleft(), -1)

    def observe_many(self, items: Iterable[ClassificationLike]) -> None:
        for c in items:
            self.observe(c)

    def reset(self) -> None:
        self._window.clear()
        self._counts = _Counts(conf=[0] * (len(self.edges) - 1))

    # ---- comparing ---------------------------------------------------------------------------

    def _state(self, value: float) -> State:
        if value >= self.policy.psi_alert:
            return "alert"
        if value >= self.policy.psi_warn:
            return "warn"
        return "ok"

    def _metrics(self, ref: DriftReference) -> Iterator[MetricDrift]:
        n, c = len(self._window), self._counts
        live_mix = {k: v / n for k, v in sorted(c.labels.items())}
        yield self._metric(
            "domain_mix", psi_categorical(live_mix, ref.label_freq), live_mix, dict(ref.label_freq)
        )
        names = [f"{lo:g}-{hi:g}" for lo, hi in zip(self.edges, self.edges[1:], strict=False)]
        live_conf = shares(c.conf)
        yield self._metric(
            "confidence",
            psi(live_conf, list(ref.confidence_freq)),
            dict(zip(names, live_conf, strict=True)),
            dict(zip(names, ref.confidence_freq, strict=True)),
        )
        oos = c.oos / n
        yield self._metric(
            "out_of_scope", rate_psi(oos, ref.oos_rate), {"rate": oos}, {"rate": ref.oos_rate}
        )
        if ref.escalation_rate is not None and c.esc_known > 0:
            esc = c.escalated / c.esc_known
            yield self._metric(
                "escalation",
                rate_psi(esc, ref.escalation_rate),
                {"rate": esc},
                {"rate": ref.escalation_rate},
            )

    def _metric(
        self, name: str, value: float, live: dict[str, float], ref: dict[str, float]
    ) -> MetricDrift:
        enough = len(self._window) >= self.policy.min_samples
        state: State = self._state(value) if enough else "insufficient_data"
        return MetricDrift(name, value, state, live, ref)

    def snapshot(self) -> DriftSnapshot:
        thresholds = {"psi_warn": self.policy.psi_warn, "psi_alert": self.policy.psi_alert}
        n = len(self._window)
        source = self.reference.source if self.reference else ""
        if not self.policy.enabled:
            return DriftSnapshot("off", n, self.policy.window, {}, thresholds, source)
        if self.reference is None:
            return DriftSnapshot("no_reference", n, self.policy.window, {}, thresholds, source)
        if n == 0:
            return DriftSnapshot("insufficient_data", 0, self.policy.window, {}, thresholds, source)
        metrics = {m.name: m for m in self._metrics(self.reference)}
        return DriftSnapshot(
            self._overall(metrics), n, self.policy.window, metrics, thresholds, source
        )

    def _overall(self, metrics: Mapping[str, MetricDrift]) -> State:
        if len(self._window) < self.policy.min_samples:
            return "insufficient_data"
        watched = [m.state for k, m in metrics.items() if k in self.policy.metrics]
        for state in ("alert", "warn"):
            if state in watched:
                return state  # type: ignore[return-value]
        return "ok"


# ---- building one for the live classifier ------------------------------------------------------


def monitor_for(spec: Any, policy: DriftPolicy | None, base_dir: str | None = None) -> DriftMonitor:
    """A monitor for the live classifier; never raises (no reference -> 'no_reference')."""
    policy = policy or DriftPolicy()
    try:
        ref: DriftReference | None = reference_for_spec(spec, policy, base_dir)
    except (LookupError, OSError, ValueError):
        ref = None
    return DriftMonitor(policy, ref)
