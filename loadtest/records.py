"""The data one request leaves behind, shared by the runner (which fills it) and the report."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestRecord:
    """One finished request. Times are seconds; `start_s` is relative to the run's start."""

    start_s: float
    latency_s: float
    status: int | None
    error: str | None
    ttft_s: float | None = None
    expert: str | None = None
    domain: str | None = None
    workload_domain: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ReplicaSample:
    """Running replicas per Serve deployment at one instant (`t_s` relative to the run start)."""

    t_s: float
    running: dict[str, int]
    target: dict[str, int]


@dataclass(frozen=True)
class SpendSnapshot:
    """Totals read from the gateway's spend API; either may be unknown."""

    cost_usd: float | None
    requests: int | None
