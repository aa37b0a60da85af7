"""Live per-expert latency and health, kept by each ingress replica for latency-aware routing.

Per process on purpose: no shared state on the hot path. Each replica sees its own traffic,
which is a fair sample of the expert's latency when the proxy spreads requests evenly.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from policies.types import ExpertStats

WINDOW = 200  # latest successful attempts per expert
MIN_SAMPLES = 20  # below this the p95 is noise: report none
FAILURES_TO_TRIP = 3  # consecutive failures mark an expert unhealthy ...
TRIP_SECONDS = 10.0  # ... for this long, then it is tried again


@dataclass
class _Expert:
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    failures: int = 0
    tripped_until: float = 0.0


class LiveStats:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._experts: dict[str, _Expert] = {}
        self._cache: tuple[float, Mapping[str, ExpertStats]] = (-1.0, {})

    def record(self, expert: str, latency_ms: float, ok: bool) -> None:
        e = self._experts.setdefault(expert, _Expert())
        if ok:
            e.latencies.append(latency_ms)
            e.failures = 0
        else:
            e.failures += 1
            if e.failures >= FAILURES_TO_TRIP:
                e.tripped_until = self._clock() + TRIP_SECONDS
        self._cache = (-1.0, {})

    def snapshot(self) -> Mapping[str, ExpertStats]:
        """Stats the engine reads; recomputed at most every 0.5 s."""
        now = self._clock()
        at, cached = self._cache
        if now - at < 0.5:
            return cached
        out = {name: self._stats(e, now) for name, e in self._experts.items()}
        self._cache = (now, out)
        return out

    @staticmethod
    def _stats(e: _Expert, now: float) -> ExpertStats:
        p95 = None
        if len(e.latencies) >= MIN_SAMPLES:
            ordered = sorted(e.latencies)
            p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        return ExpertStats(p95_ms=p95, healthy=now >= e.tripped_until)
