"""The policy sections of continuous optimisation, composed by router.config into the one
document (as experts/spec.py and classifiers/spec.py do for theirs): `drift:`, `feedback:` and
`classifier_rollout:`. Schemas only: no behaviour, nothing of the router imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from classifiers.spec import ClassifierSpec

MetricName = Literal["domain_mix", "confidence", "out_of_scope", "escalation"]
METRICS: tuple[MetricName, ...] = ("domain_mix", "confidence", "out_of_scope", "escalation")
Mode = Literal["shadow", "canary"]


class DriftPolicy(BaseModel):
    """The policy's `drift:` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    window: int = Field(1000, ge=20, description="Requests in the rolling window (per replica).")
    min_samples: int = Field(
        200, ge=1, description="Say nothing (insufficient_data) below this many in the window."
    )
    psi_warn: float = Field(0.1, ge=0, description="PSI from which a metric is 'warn'.")
    psi_alert: float = Field(0.2, gt=0, description="PSI from which a metric is 'alert'.")
    metrics: list[MetricName] = Field(
        default_factory=lambda: list(METRICS),
        description="Which metrics may raise the alert (all are still reported).",
    )
    reference: str | None = Field(
        None,
        description="JSON reference file (classifier drift-reference) for classifiers whose "
        "artifact carries none, e.g. kind `examples`.",
    )


class FeedbackPolicy(BaseModel):
    """The policy's `feedback:` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep_prompts: bool = Field(
        False,
        description="Keep each request's prompt (last user message) for prompt_ttl_s so "
        "feedback can become a training row without the client resending it.",
    )
    prompt_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    max_pending: int = Field(1000, ge=1, description="Queued notes per replica before dropping.")


class ClassifierRollout(BaseModel):
    """The policy's `classifier_rollout:` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    candidate: ClassifierSpec = Field(
        description="The candidate classifier (usually {kind: artifact, path: DIR})."
    )
    mode: Mode = "shadow"
    percent: float = Field(
        100.0,
        ge=0,
        le=100,
        description="shadow: share of requests the candidate also scores; "
        "canary: share of users it routes.",
    )
    sticky: Literal["user", "key", "team", "request"] = Field(
        "user", description="What keeps a canary arm stable (falls back down this list)."
    )
    max_inflight: int = Field(
        64, ge=1, description="Shadow scorings in flight per replica; beyond, requests skip it."
    )
    keep_disagreements: int = Field(50, ge=0, le=10_000)


def with_absolute_candidate(
    rollout: ClassifierRollout | None, base: Path
) -> ClassifierRollout | None:
    """Relative candidate paths made absolute against `base`, like classifier.path (for Ray
    workers, whose working directory differs)."""
    if rollout is None or rollout.candidate.path is None:
        return rollout
    p = Path(rollout.candidate.path)
    if p.is_absolute():
        return rollout
    candidate = rollout.candidate.model_copy(update={"path": str((base / p).resolve())})
    return rollout.model_copy(update={"candidate": candidate})
