"""Live expert stats feed the engine's latency-aware skipping."""

from __future__ import annotations

from router.serving.livestats import FAILURES_TO_TRIP, MIN_SAMPLES, TRIP_SECONDS, LiveStats


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_p95_needs_enough_samples_then_tracks_the_tail() -> None:
    clock = Clock()
    stats = LiveStats(clock)
    for _ in range(MIN_SAMPLES - 1):
        stats.record("a", 10.0, ok=True)
    assert stats.snapshot()["a"].p95_ms is None
    values = [float(v) for v in range(1, 101)]
    for v in values:
        stats.record("a", v, ok=True)
    clock.t += 1
    p95 = stats.snapshot()["a"].p95_ms
    window = sorted(([10.0] * (MIN_SAMPLES - 1) + values)[-200:])
    assert p95 == window[int(0.95 * len(window))]


def test_consecutive_failures_trip_then_recover() -> None:
    clock = Clock()
    stats = LiveStats(clock)
    for _ in range(FAILURES_TO_TRIP - 1):
        stats.record("b", 0, ok=False)
    assert stats.snapshot()["b"].healthy
    stats.record("b", 0, ok=False)
    assert not stats.snapshot()["b"].healthy
    clock.t += TRIP_SECONDS + 0.1
    assert stats.snapshot()["b"].healthy


def test_success_resets_the_failure_streak() -> None:
    stats = LiveStats(Clock())
    for _ in range(FAILURES_TO_TRIP - 1):
        stats.record("c", 0, ok=False)
    stats.record("c", 5, ok=True)
    stats.record("c", 0, ok=False)
    assert stats.snapshot()["c"].healthy
