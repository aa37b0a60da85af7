"""Which classifier answers a request while a candidate is rolled out: the arms. Pure but for
the background shadow tasks.

  shadow  the candidate scores `percent` % of requests (sampled per request id) beside the live
          classifier, in the background, after the live answer is already decided: it can never
          change routing, and a slow or failing candidate costs the request nothing. Agreement
          (same label and same out-of-scope flag) and the disagreements are counted (ShadowBook).
  canary  `percent` % of users are routed by the candidate, sticky per user: the arm is a keyed
          hash of the sticky key (the request's `user`, else the API key id, else the team,
          else the request id) and the candidate's path, the same in every replica and across
          restarts; raising the percentage only adds users (a bucket under 5% is under 20%).
          A candidate that fails answers with the live classifier instead (counted).

With no rollout, `LiveOnly` stands in (a null object): the live classifier, nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from classifiers.base import Classification
from policies.bucket import bucket
from router.continuous.spec import ClassifierRollout

log = logging.getLogger("slm_router")

Arm = Literal["current", "candidate"]


class ClassifierCaller(Protocol):
    """How the ingress reaches a classifier (in-process or a Serve handle: serving.callers)."""

    async def classify(self, text: str) -> Classification: ...


def sticky_key(
    rollout: ClassifierRollout,
    *,
    user: str | None,
    key_id: str | None,
    team: str | None,
    request_id: str,
) -> str:
    order = {"user": 0, "key": 1, "team": 2, "request": 3}[rollout.sticky]
    candidates = [("user", user), ("key", key_id), ("team", team), ("request", request_id)]
    for kind, value in candidates[order:]:
        if value:
            return f"{kind}:{value}"
    return f"request:{request_id}"


def canary_arm(rollout: ClassifierRollout | None, key: str) -> Arm:
    """Which classifier routes this sticky key."""
    if rollout is None or rollout.mode != "canary" or rollout.percent <= 0:
        return "current"
    salt = rollout.candidate.path or rollout.candidate.kind
    return (
        "candidate" if bucket("classifier-canary", salt, key) < rollout.percent / 100 else "current"
    )


def shadow_sampled(rollout: ClassifierRollout | None, request_id: str) -> bool:
    if rollout is None or rollout.mode != "shadow" or rollout.percent <= 0:
        return False
    return bucket("classifier-shadow", request_id) < rollout.percent / 100


# ---- shadow bookkeeping --------------------------------------------------------------------


def agrees(a: Classification, b: Classification) -> bool:
    """Same routing input: same label and the same out-of-scope verdict."""
    return a.out_of_scope == b.out_of_scope and (a.out_of_scope or a.label == b.label)


def _routed_label(c: Classification) -> str:
    return "out_of_scope" if c.out_of_scope else c.label


@dataclass(frozen=True)
class Disagreement:
    request_id: str
    ts: float
    current: str
    candidate: str
    current_confidence: float
    candidate_confidence: float


@dataclass
class ShadowBook:
    """Agreement of the candidate with the live classifier, on this replica since its start.
    Holds no prompt text: disagreements are found again by request id (ledger, feedback)."""

    keep: int = 50
    compared: int = 0
    agreed: int = 0
    errors: int = 0
    skipped: int = 0
    pairs: Counter[tuple[str, str]] = field(default_factory=Counter)
    recent: deque[Disagreement] = field(default_factory=deque)
    arms: Counter[str] = field(default_factory=Counter)
    canary_fallbacks: int = 0

    def record(self, request_id: str, current: Classification, candidate: Classification) -> bool:
        self.compared += 1
        if agrees(current, candidate):
            self.agreed += 1
            return True
        a, b = _routed_label(current), _routed_label(candidate)
        self.pairs[(a, b)] += 1
        if self.keep:
            self.recent.append(
                Disagreement(
                    request_id, time.time(), a, b, current.confidence, candidate.confidence
                )
            )
            while len(self.recent) > self.keep:
                self.recent.popleft()
        return False

    @property
    def agreement_rate(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    def snapshot(self, top: int = 10) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "agreed": self.agreed,
            "agreement_rate": self.agreement_rate,
            "errors": self.errors,
            "skipped": self.skipped,
            "top_disagreements": [
                {"current": a, "candidate": b, "count": n}
                for (a, b), n in self.pairs.most_common(top)
            ],
            "recent_disagreements": [d.__dict__ for d in list(self.recent)[-top:]],
            "canary_arms": dict(self.arms),
            "canary_fallbacks": self.canary_fallbacks,
        }


# ---- the caller the RouterService uses (through Continuous) --------------------------------


@dataclass(frozen=True)
class RolloutChoice:
    classification: Classification  # what routing uses
    arm: Arm  # which classifier produced it


class RolloutCaller:
    """The live classifier plus an optional candidate, as the rollout section says.

    `classify` returns what routing must use. In shadow mode that is always the live
    classifier's result, returned before the candidate is even asked.
    """

    def __init__(
        self,
        current: ClassifierCaller,
        candidate: ClassifierCaller | None = None,
        rollout: ClassifierRollout | None = None,
    ) -> None:
        self.current = current
        self.candidate = candidate if rollout is not None else None
        self.rollout = rollout if candidate is not None else None
        self.book = ShadowBook(keep=rollout.keep_disagreements if rollout else 0)
        self._tasks: set[asyncio.Task[None]] = set()

    async def choose(
        self, text: str, *, user: str | None, key_id: str | None, team: str | None, request_id: str
    ) -> RolloutChoice:
        """`classify` with the sticky key the rollout keys its canary on."""
        key = request_id
        if self.rollout is not None:
            key = sticky_key(
                self.rollout, user=user, key_id=key_id, team=team, request_id=request_id
            )
        return await self.classify(text, key, request_id)

    async def classify(self, text: str, key: str, request_id: str) -> RolloutChoice:
        if canary_arm(self.rollout, key) == "candidate":
            assert self.candidate is not None
            self.book.arms["candidate"] += 1
            try:
                return RolloutChoice(await self.candidate.classify(text), "candidate")
            except Exception:  # a broken candidate must not fail the request
                self.book.canary_fallbacks += 1
                log.warning("canary classifier failed; using the live one", exc_info=True)
        elif self.rollout is not None and self.rollout.mode == "canary":
            self.book.arms["current"] += 1
        result = await self.current.classify(text)
        if shadow_sampled(self.rollout, request_id):
            self._start_shadow(text, result, request_id)
        return RolloutChoice(result, "current")

    def _start_shadow(self, text: str, current: Classification, request_id: str) -> None:
        assert self.rollout is not None
        if len(self._tasks) >= self.rollout.max_inflight:
            self.book.skipped += 1
            return
        task = asyncio.create_task(self._shadow(text, current, request_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _shadow(self, text: str, current: Classification, request_id: str) -> None:
        assert self.candidate is not None
        try:
            candidate = await self.candidate.classify(text)
        except Exception:  # counted, never raised: nobody waits on a shadow
            self.book.errors += 1
            return
        self.book.record(request_id, current, candidate)

    async def drain(self) -> None:
        """Wait for shadow scorings in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


class Arms(Protocol):
    """The live classifier alone (LiveOnly) or with a candidate (RolloutCaller)."""

    book: ShadowBook

    async def choose(
        self, text: str, *, user: str | None, key_id: str | None, team: str | None, request_id: str
    ) -> RolloutChoice: ...

    async def drain(self) -> None: ...


class LiveOnly:
    """No rollout: the live classifier answers every request; the book stays empty."""

    def __init__(self, current: ClassifierCaller) -> None:
        self.current = current
        self.book = ShadowBook(keep=0)

    async def choose(
        self, text: str, *, user: str | None, key_id: str | None, team: str | None, request_id: str
    ) -> RolloutChoice:
        return RolloutChoice(await self.current.classify(text), "current")

    async def drain(self) -> None:
        return None
