"""Continuous optimisation in the ingress: classifier arms, drift window, feedback notes, status.

One object per ingress replica (built with the Gateway; a hot reload builds a new one). The
RouterService's classify step goes through it on every request:

    choice = await continuous.classify(text, user=..., key_id=..., team=..., request_id=...)
    continuous.observe(choice, request_id, text)        # O(1); never waits, never raises

With no rollout configured the arms are a null object (arms.LiveOnly): the live classifier
answers, nothing else is asked. GET /v1/router/status (status_api) reports `status()`, and
/metrics the gauges (`register_gauges`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from classifiers.base import Classification
from router.continuous.arms import (
    Arms,
    ClassifierCaller,
    LiveOnly,
    RolloutCaller,
    RolloutChoice,
    ShadowBook,
)
from router.continuous.drift import DriftMonitor, monitor_for
from router.continuous.feedback import FeedbackStore, RequestNote
from router.continuous.gauges import register_drift_gauges, register_rollout_gauges
from router.continuous.identity import classifier_identity
from router.continuous.spec import ClassifierRollout

if TYPE_CHECKING:
    from router.config import AppConfig

log = logging.getLogger("slm_router")


class Continuous:
    def __init__(
        self,
        config: AppConfig,
        live: ClassifierCaller,
        candidate: ClassifierCaller | None = None,
        feedback: FeedbackStore | None = None,
        base_dir: Path | None = None,
    ) -> None:
        self.policy_name = config.name
        self.rollout = config.classifier_rollout
        base = base_dir or Path.cwd()
        self.caller: Arms = (
            RolloutCaller(live, candidate, self.rollout)
            if self.rollout is not None and candidate is not None
            else LiveOnly(live)
        )
        self.drift: DriftMonitor = monitor_for(config.classifier, config.drift, str(base))
        self.feedback = feedback
        examples = config.route_examples()
        self.live_identity = classifier_identity(config.classifier, examples, base)
        self.candidate_identity = (
            classifier_identity(self.rollout.candidate, examples, base) if self.rollout else None
        )

    # ---- per request -------------------------------------------------------------------------

    async def classify(
        self,
        text: str,
        *,
        user: str | None,
        key_id: str | None,
        team: str | None,
        request_id: str,
    ) -> RolloutChoice:
        """What routing must use (the live classifier's result unless this user is in the
        canary); shadow scoring starts in the background."""
        return await self.caller.choose(
            text, user=user, key_id=key_id, team=team, request_id=request_id
        )

    def observe(self, choice: RolloutChoice, request_id: str, text: str) -> None:
        """After routing: the drift window (live arm only: the reference is the live model's)
        and, with feedback.keep_prompts, a note for a later feedback. Never raises."""
        try:
            if choice.arm == "current":
                self.drift.observe(choice.classification)
            if self.feedback is not None:
                self.feedback.note(self._note(choice.classification, choice.arm, request_id, text))
        except Exception:  # observability must never fail a request
            log.debug("continuous: observe failed", exc_info=True)

    def _note(self, c: Classification, arm: str, request_id: str, text: str) -> RequestNote:
        ident = self.candidate_identity if arm == "candidate" else self.live_identity
        version = (ident or {}).get("version") or ""
        return RequestNote(request_id, text, c.label, c.confidence, c.out_of_scope, version, arm)

    # ---- status and metrics ------------------------------------------------------------------

    def status(self, experts: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
        return router_status_body(
            classifier=self.live_identity,
            candidate=self.candidate_identity,
            rollout=self.rollout,
            book=self.caller.book if self.rollout else None,
            drift=self.drift.snapshot().to_dict(),
            experts=experts,
            policy_name=self.policy_name,
        )

    def register_gauges(self, meter: Any, current: Callable[[], Continuous] | None = None) -> None:
        """Drift and rollout gauges; `current` returns the live object if it may be swapped."""
        get = current or (lambda: self)
        register_drift_gauges(meter, lambda: get().drift)
        register_rollout_gauges(meter, lambda: get().caller)


# ---- GET /v1/router/status (router.continuous.status_api) ------------------------------------


def router_status_body(
    *,
    classifier: Mapping[str, Any],
    candidate: Mapping[str, Any] | None,
    rollout: ClassifierRollout | None,
    book: ShadowBook | None,
    drift: Mapping[str, Any] | None,
    experts: Mapping[str, Mapping[str, Any]] | None = None,
    policy_name: str = "",
) -> dict[str, Any]:
    """The body of GET /v1/router/status. `classifier`/`candidate`: ArtifactInfo as dicts
    (kind, version, data_sha256); `drift`: DriftSnapshot.to_dict(); `experts`: per expert
    {model, adapter, version, data_sha256} as their ModelInfo metadata reports them."""
    alerts = []
    if drift is not None and drift.get("state") == "alert":
        alerts.append({"kind": "drift", "message": _drift_message(drift)})
    return {
        "object": "router.status",
        "policy": policy_name,
        "classifier": dict(classifier),
        "rollout": None
        if rollout is None
        else {
            "mode": rollout.mode,
            "percent": rollout.percent,
            "sticky": rollout.sticky,
            "candidate": None if candidate is None else dict(candidate),
            "shadow": None if book is None else book.snapshot(),
        },
        "drift": None if drift is None else dict(drift),
        "experts": {k: dict(v) for k, v in (experts or {}).items()},
        "alerts": alerts,
    }


def _drift_message(drift: Mapping[str, Any]) -> str:
    metrics = drift.get("metrics") or {}
    over = [f"{k} PSI {m['psi']:.3f}" for k, m in metrics.items() if m.get("state") == "alert"]
    limit = (drift.get("thresholds") or {}).get("psi_alert")
    return f"classifier output drift: {', '.join(over)} (alert at {limit})"
