"""Safe rollout of a new classifier: shadow, then canary, then promote (or roll back). Pure.

The policy's `classifier_rollout:` section (ClassifierRollout) names a candidate classifier and
a mode; `slm-router classifier-rollout ...` (router/ops/rollout_cli.py) edits it and applies the
file through the hot-reload path, so no step needs a restart.

  shadow  the candidate scores `percent` % of requests (sampled per request id) beside the live
          classifier, in the background, after the live answer is already decided: it can never
          change routing, and a slow or failing candidate costs the request nothing. Agreement
          (same label and same out-of-scope flag) and the disagreements are counted (ShadowBook).
  canary  `percent` % of users are routed by the candidate, sticky per user: the arm is a keyed
          hash of the sticky key (the request's `user`, else the API key id, else the team,
          else the request id) and the candidate's path, the same in every replica and across
          restarts; raising the percentage only adds users (a bucket under 5% is under 20%).
          A candidate that fails answers with the live classifier instead (counted).
  promote the candidate becomes `classifier:`; the rollout section goes.
  rollback the policy text from before the rollout started is written back, byte for byte.

Every step is logged with who, when, which artifact versions and the policy's hashes
(RolloutLogEntry, kept in Redis by the CLI).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from classifiers.base import Classification
from classifiers.spec import ClassifierSpec
from policies.bucket import bucket

log = logging.getLogger("slm_router")

Mode = Literal["shadow", "canary"]
Arm = Literal["current", "candidate"]
Action = Literal["shadow", "canary", "promote", "rollback"]
ROLLOUT_KEY = "classifier_rollout"
CLASSIFIER_KEY = "classifier"


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


# ---- arms ----------------------------------------------------------------------------------


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


# ---- the caller the RouterService uses -----------------------------------------------------


class ClassifierCaller(Protocol):
    async def classify(self, text: str) -> Classification: ...


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


def register_rollout_gauges(meter: Any, caller: Any) -> None:
    """`caller` is a RolloutCaller or a zero-argument callable returning the current one.

    slm_router_shadow_compared, slm_router_shadow_agreement (0-1, absent before a comparison),
    slm_router_canary_requests{arm}.
    """
    from collections.abc import Iterable

    from opentelemetry.metrics import CallbackOptions, Observation

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


# ---- the log -------------------------------------------------------------------------------


class ArtifactRef(BaseModel):
    """Which classifier: enough to find it again and to know it is the same one."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    path: str | None = None
    version: str | None = None
    data_sha256: str | None = None


class RolloutLogEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ts: float
    actor: str
    action: Action
    policy_file: str
    mode: Mode | None = None
    percent: float | None = None
    current: ArtifactRef
    candidate: ArtifactRef | None = None
    policy_sha256_before: str
    policy_sha256_after: str
    applied: bool = True
    forced: bool = False
    note: str = ""
    previous_policy: str = Field("", description="The full policy text before this step.")

    def summary(self) -> dict[str, Any]:
        return self.model_dump(exclude={"previous_policy"})


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---- editing the policy text ---------------------------------------------------------------
# PyYAML cannot round-trip comments, so edits replace whole top-level blocks as text: comments
# and layout everywhere else in the file survive. The blocks we replace are written in flow
# style, on one line each, so a later edit finds them as easily.

_TOP = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_-]*)\s*:")


def _block_span(lines: list[str], key: str) -> tuple[int, int] | None:
    """[start, end) lines of top-level `key:` and its indented body (trailing blanks and
    comments at column 0 stay outside: they usually introduce the next block)."""
    start = next(
        (i for i, ln in enumerate(lines) if (m := _TOP.match(ln)) and m["key"] == key), None
    )
    if start is None:
        return None
    end = start + 1
    last_body = start
    while end < len(lines):
        ln = lines[end]
        if ln.strip() and not ln[0].isspace() and not ln.startswith("#"):
            break
        if ln.strip() and ln[0].isspace():
            last_body = end
        end += 1
    return start, last_body + 1


def _flow(key: str, value: Mapping[str, Any]) -> str:
    import yaml

    body = yaml.safe_dump(dict(value), default_flow_style=True, sort_keys=False, width=10_000)
    return f"{key}: {body.strip()}\n"


def set_block(text: str, key: str, value: Mapping[str, Any] | None) -> str:
    """`text` with top-level `key` replaced by `value` (None removes it; absent: appended)."""
    lines = text.splitlines(keepends=True)
    span = _block_span(lines, key)
    new = [] if value is None else [_flow(key, value)]
    if span is None:
        if value is None:
            return text
        tail = "" if not lines or lines[-1].endswith("\n") else "\n"
        gap = "" if not lines or not (text + tail).strip() or text.endswith("\n\n") else "\n"
        return text + tail + gap + new[0]
    return "".join(lines[: span[0]] + new + lines[span[1] :])


def read_doc(text: str) -> dict[str, Any]:
    import yaml

    doc = yaml.safe_load(text) or {}
    if not isinstance(doc, dict):
        raise ValueError("a policy file is a YAML mapping")
    return doc


def current_rollout(text: str) -> ClassifierRollout | None:
    raw = read_doc(text).get(ROLLOUT_KEY)
    return None if raw is None else ClassifierRollout.model_validate(raw)


def _spec_dict(spec: ClassifierSpec) -> dict[str, Any]:
    return {"kind": spec.kind, **spec.model_dump(exclude_defaults=True, exclude_none=True)}


def step_shadow(text: str, candidate: ClassifierSpec, percent: float = 100.0) -> str:
    ro = ClassifierRollout(candidate=candidate, mode="shadow", percent=percent)
    return set_block(text, ROLLOUT_KEY, _rollout_dict(ro))


def step_canary(text: str, percent: float, candidate: ClassifierSpec | None = None) -> str:
    now = current_rollout(text)
    if candidate is None:
        if now is None:
            raise ValueError("no rollout in progress: name the candidate (--candidate DIR)")
        candidate = now.candidate
    base = now.model_dump() if now is not None and now.candidate == candidate else {}
    ro = ClassifierRollout.model_validate(
        {**base, "candidate": candidate, "mode": "canary", "percent": percent}
    )
    return set_block(text, ROLLOUT_KEY, _rollout_dict(ro))


def step_promote(text: str) -> str:
    """The candidate replaces the live classifier; placement and scaling settings stay."""
    now = current_rollout(text)
    if now is None:
        raise ValueError("no rollout in progress: nothing to promote")
    live = dict(read_doc(text).get(CLASSIFIER_KEY) or {})
    for key in ("kind", "path", "encoder", "oos_threshold", "temperature"):
        live.pop(key, None)
    merged = {**_spec_dict(now.candidate), **live}
    ClassifierSpec.model_validate(merged)  # refuse here what the loader would refuse
    text = set_block(text, CLASSIFIER_KEY, merged)
    return set_block(text, ROLLOUT_KEY, None)


def _rollout_dict(ro: ClassifierRollout) -> dict[str, Any]:
    body = ro.model_dump(exclude_defaults=True, exclude={"candidate"})
    return {"candidate": _spec_dict(ro.candidate), "mode": ro.mode, "percent": ro.percent, **body}
