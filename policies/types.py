"""Inputs and output of the decision engine. Frozen, so a plan can't be changed after deciding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Scores:
    """What the engine needs from a classification (policies never import classifiers)."""

    label: str
    confidence: float
    out_of_scope: bool
    escalate: float | None = None


@dataclass(frozen=True)
class RequestContext:
    text: str = ""  # the prompt text rules match on (last user message)
    pinned_model: str | None = None  # the client's `model` when not "auto"
    team: str | None = None
    user: str | None = None
    request_id: str = ""
    budget_used_fraction: float | None = None  # of the team's budget, when it has one
    # Capabilities the request needs ("chat", "tools", "json_schema", ..., or "embeddings");
    # empty: not known, nothing is filtered (policies/capable.py).
    needs: frozenset[str] = frozenset()

    @property
    def is_chat(self) -> bool:
        """A chat request (the classifier's domain routes apply), not e.g. embeddings."""
        return not self.needs or "chat" in self.needs


@dataclass(frozen=True)
class ExpertStats:
    p95_ms: float | None = None
    queue_full: bool = False
    healthy: bool = True


@dataclass(frozen=True)
class RoutePlan:
    expert: str
    fallbacks: tuple[str, ...]
    domain: str
    reason: str
    trace: tuple[str, ...] = ()  # rules that fired, in order
    shadow: str | None = None  # candidate expert that gets a discarded copy
    out_of_scope: bool = False  # the classifier said out of scope (the plan is the fallback's)
    skipped: tuple[str, ...] = ()  # experts left out for latency or health, in chain order

    @property
    def chain(self) -> tuple[str, ...]:
        return (self.expert, *self.fallbacks)

    def to_dict(self) -> dict[str, Any]:
        """The plan as `/v1/route` and `policy explain --json` show it."""
        return {
            "expert": self.expert,
            "fallbacks": list(self.fallbacks),
            "domain": self.domain,
            "out_of_scope": self.out_of_scope,
            "reason": self.reason,
            "trace": list(self.trace),
            "shadow": self.shadow,
            "skipped": list(self.skipped),
        }
