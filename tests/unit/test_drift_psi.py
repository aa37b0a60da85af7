"""Drift: PSI on synthetic shifts with answers computed by hand, the rolling window, gauges."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.continuous.drift import (
    EPSILON,
    DriftMonitor,
    bin_index,
    psi,
    psi_categorical,
    rate_psi,
)
from router.continuous.gauges import register_drift_gauges
from router.continuous.reference import DriftReference
from router.continuous.spec import DriftPolicy

EDGES = tuple(i / 10 for i in range(11))


@dataclass(frozen=True)
class C:
    """A classification as the classifier hands it over (only the fields drift reads)."""

    label: str
    confidence: float
    out_of_scope: bool = False
    escalate: float | None = None


def reference(label_freq: dict[str, float], conf_freq: list[float], **kw: object) -> DriftReference:
    return DriftReference(label_freq, EDGES, tuple(conf_freq), **kw)  # type: ignore[arg-type]


# ---- the measure ---------------------------------------------------------------------------


def test_identical_distributions_have_zero_psi() -> None:
    ref = [0.1, 0.2, 0.3, 0.4]
    assert psi(ref, ref) == 0.0
    assert psi_categorical({"a": 3, "b": 1}, {"b": 0.25, "a": 0.75}) == pytest.approx(0.0)


def test_known_shift_matches_the_hand_computed_value() -> None:
    # (0.5 - 0.25) ln(0.5 / 0.25) + (0.5 - 0.75) ln(0.5 / 0.75) = 0.25 ln 2 + 0.25 ln 1.5
    #   = 0.25 ln 3
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * math.log(3), rel=1e-12)
    # A rate of 0.5 against a reference of 0.1: 0.4 ln 5 + (-0.4) ln(0.5 / 0.9) = 0.4 ln 9
    assert rate_psi(0.5, 0.1) == pytest.approx(0.4 * math.log(9), rel=1e-12)


def test_an_empty_bin_is_floored_not_infinite() -> None:
    got = psi([1.0, 0.0], [0.5, 0.5])
    by_hand = 0.5 * math.log(2) + (EPSILON - 0.5) * math.log(EPSILON / 0.5)
    assert got == pytest.approx(by_hand, rel=1e-12)
    assert math.isfinite(got)


def test_a_label_missing_from_the_reference_counts_as_drift() -> None:
    # live {a: .5, new: .5} vs ref {a: 1}: union bins [a, new] -> [.5, .5] vs [1, 0 -> eps]
    got = psi_categorical({"a": 1, "new": 1}, {"a": 1.0})
    by_hand = (0.5 - 1.0) * math.log(0.5) + (0.5 - EPSILON) * math.log(0.5 / EPSILON)
    assert got == pytest.approx(by_hand, rel=1e-12)


@given(
    st.lists(st.floats(0.01, 1), min_size=2, max_size=8),
    st.lists(st.floats(0.01, 1), min_size=2, max_size=8),
)
def test_psi_is_symmetric_and_non_negative(a: list[float], b: list[float]) -> None:
    n = min(len(a), len(b))
    sa, sb = np.array(a[:n]) / sum(a[:n]), np.array(b[:n]) / sum(b[:n])
    assert psi(sa, sb) >= -1e-12
    assert psi(sa, sb) == pytest.approx(psi(sb, sa))


@given(st.lists(st.floats(0, 1), min_size=1, max_size=200))
def test_binning_matches_numpy_histogram(values: list[float]) -> None:
    mine = np.bincount([bin_index(v, EDGES) for v in values], minlength=10)
    theirs, _ = np.histogram(values, bins=np.array(EDGES))
    assert mine.tolist() == theirs.tolist()


# ---- the window ----------------------------------------------------------------------------


def _replay(monitor: DriftMonitor, mix: dict[str, int], conf: float) -> None:
    items = [
        C(label, conf, out_of_scope=label == "out_of_scope")
        for label, n in mix.items()
        for _ in range(n)
    ]
    random.Random(0).shuffle(items)
    monitor.observe_many(items)


def test_in_distribution_traffic_is_ok_and_a_shifted_mix_alerts() -> None:
    ref = reference({"a": 0.45, "b": 0.45, "out_of_scope": 0.1}, [0] * 9 + [1.0])
    mon = DriftMonitor(DriftPolicy(window=200, min_samples=100), ref)
    _replay(mon, {"a": 90, "b": 90, "out_of_scope": 20}, conf=0.95)
    snap = mon.snapshot()
    assert snap.state == "ok"
    assert snap.metrics["domain_mix"].psi == pytest.approx(0.0, abs=1e-12)
    assert snap.metrics["confidence"].psi == pytest.approx(0.0, abs=1e-12)
    # The window slides: 200 new requests replace the old ones entirely.
    _replay(mon, {"a": 150, "b": 30, "out_of_scope": 20}, conf=0.95)
    snap = mon.snapshot()
    by_hand = (0.75 - 0.45) * math.log(0.75 / 0.45) + (0.15 - 0.45) * math.log(0.15 / 0.45)
    assert snap.metrics["domain_mix"].psi == pytest.approx(by_hand, rel=1e-9)
    assert snap.metrics["out_of_scope"].psi == pytest.approx(0.0, abs=1e-12)
    assert snap.state == "alert" and snap.to_dict()["alert"] is True


def test_confidence_shift_is_measured_per_bin() -> None:
    ref = reference({"a": 1.0}, [0, 0, 0, 0, 0, 0, 0, 0, 0.5, 0.5])
    mon = DriftMonitor(DriftPolicy(window=100, min_samples=10), ref)
    mon.observe_many([C("a", 0.85)] * 25 + [C("a", 0.95)] * 25 + [C("a", 0.55)] * 50)
    # live bins 5, 8, 9 = .5, .25, .25; reference bins 8, 9 = .5, .5; bin 5 reference floored
    by_hand = (0.5 - EPSILON) * math.log(0.5 / EPSILON) + 2 * (0.25 - 0.5) * math.log(0.25 / 0.5)
    assert mon.snapshot().metrics["confidence"].psi == pytest.approx(by_hand, rel=1e-9)


def test_escalation_rate_uses_the_escalation_threshold() -> None:
    ref = reference({"a": 1.0}, [0] * 9 + [1.0], escalation_rate=0.2, escalation_threshold=0.6)
    mon = DriftMonitor(DriftPolicy(window=100, min_samples=10), ref)
    mon.observe_many([C("a", 0.95, escalate=0.7)] * 50 + [C("a", 0.95, escalate=0.3)] * 50)
    m = mon.snapshot().metrics["escalation"]
    assert m.live == {"rate": 0.5}
    assert m.psi == pytest.approx(rate_psi(0.5, 0.2))
    assert m.psi == pytest.approx(0.3 * math.log(0.5 / 0.2) - 0.3 * math.log(0.5 / 0.8))


def test_too_few_samples_say_nothing_and_no_reference_says_so() -> None:
    ref = reference({"a": 1.0}, [0] * 9 + [1.0])
    mon = DriftMonitor(DriftPolicy(window=100, min_samples=50), ref)
    mon.observe_many([C("b", 0.1)] * 49)  # wildly off, but only 49
    assert mon.snapshot().state == "insufficient_data"
    mon.observe(C("b", 0.1))
    assert mon.snapshot().state == "alert"
    assert DriftMonitor(DriftPolicy(), None).snapshot().state == "no_reference"


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 1), st.booleans()), max_size=120),
    st.integers(20, 60),
)
def test_incremental_counts_equal_a_recount_of_the_last_window(
    seq: list[tuple[str, float, bool]], window: int
) -> None:
    ref = reference({"a": 0.3, "b": 0.3, "c": 0.3, "out_of_scope": 0.1}, [0.1] * 10)
    mon = DriftMonitor(DriftPolicy(window=window, min_samples=1), ref)
    items = [C(lab, conf, oos) for lab, conf, oos in seq]
    mon.observe_many(items)
    tail = items[-window:]
    assert len(mon) == len(tail)
    if not tail:
        return
    fresh = DriftMonitor(DriftPolicy(window=window, min_samples=1), ref)
    fresh.observe_many(tail)
    a, b = mon.snapshot().to_dict(), fresh.snapshot().to_dict()
    assert a == b


def test_gauges_report_the_snapshot() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    ref = reference({"a": 0.5, "b": 0.5}, [0] * 9 + [1.0])
    mon = DriftMonitor(DriftPolicy(window=100, min_samples=10), ref)
    mon.observe_many([C("a", 0.95)] * 75 + [C("b", 0.95)] * 25)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    register_drift_gauges(provider.get_meter("t"), lambda: mon)
    data = reader.get_metrics_data()
    points = {
        (m.name, tuple(sorted((p.attributes or {}).items()))): p.value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        for p in m.data.data_points
    }
    assert points[("slm_router_drift_psi", (("metric", "domain_mix"),))] == pytest.approx(
        0.25 * math.log(3)
    )
    assert points[("slm_router_drift_state", ())] == 2
    assert points[("slm_router_drift_window_samples", ())] == 100
    provider.shutdown()
