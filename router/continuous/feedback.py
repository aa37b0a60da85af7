"""Feedback on routed requests, kept in Redis beside the request's ledger record.

A client (or a reviewer) says, for a request id the gateway returned in `x-request-id`: how good
the answer was (rating -1/0/+1), which domain or expert would have been right, and a note. The
store joins it with the request's routing record (the ledger's CostRecord: team, expert, domain,
reason) and, when the policy keeps prompts (`feedback.keep_prompts`), with the prompt text and
classification noted at routing time. `export` turns it into labelled training rows for
`slm-router classifier retrain --feedback`.

Label of a row: the correction if one was given; else the routed domain when the rating is +1
(a confirmed route); else none (a complaint without a correction teaches the classifier nothing).

Layout (prefix `slm`, the ledger's):
  {p}:fb:{request_id}        hash, the feedback joined with the routing record (last one wins)
  {p}:fb:idx                 zset request_id -> time of the feedback
  {p}:fb:req:{request_id}    hash, what the gateway noted when routing (TTL prompt_ttl_s)

Only the caller's own team may comment on a request (admins on any); for another team's
request the answer is the same 404 as for an unknown id, so ids can't be probed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from router.continuous.spec import FeedbackPolicy
from router.errors import InvalidRequest, NotFound
from router.finance.keyspace import is_cluster

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from router.finance.keys import KeyInfo
    from router.finance.ledger_types import CostRecord

log = logging.getLogger("slm_router")
RecordLookup = Callable[[str], Awaitable["CostRecord | None"]]
LabelSource = Literal["correction", "confirmed"]
DEFAULT_RETENTION_S = 400 * 24 * 3600


# A request id: the gateway's (32 hex digits) or a client's own valid X-Request-Id. No ':' and
# not "idx", so that an id can never name another of the store's keys ({p}:fb:idx, fb:req:...).
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
COMPLETION_PREFIXES = ("chatcmpl-",)
RESERVED_IDS = frozenset({"idx", "req"})


def clean_request_id(value: str) -> str | None:
    """The request id `value` names (a chat completion's `id` is "chatcmpl-<request id>"), or
    None when it is not one."""
    for prefix in COMPLETION_PREFIXES:
        if value.startswith(prefix):
            value = value[len(prefix) :]
            break
    if not REQUEST_ID.fullmatch(value) or value in RESERVED_IDS:
        return None
    return value


class FeedbackIn(BaseModel):
    """POST /v1/feedback body."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        min_length=1,
        max_length=160,
        description="The answer's x-request-id, or the chat completion's `id` (chatcmpl-...).",
    )
    rating: Literal[-1, 0, 1] | None = Field(None, description="-1 bad, 0 neutral, +1 good.")
    correct_domain: str | None = Field(None, min_length=1, max_length=128)
    correct_expert: str | None = Field(None, min_length=1, max_length=128)
    note: str | None = Field(None, max_length=4000)
    text: str | None = Field(
        None, max_length=20_000, description="The prompt, if the gateway did not keep it."
    )

    @field_validator("request_id")
    @classmethod
    def _request_id(cls, value: str) -> str:
        rid = clean_request_id(value)
        if rid is None:
            raise ValueError("not a request id: send the answer's x-request-id or its `id`")
        return rid

    @model_validator(mode="after")
    def _something(self) -> FeedbackIn:
        if self.rating is None and not (self.correct_domain or self.correct_expert or self.note):
            raise ValueError("give a rating, a correct_domain or correct_expert, or a note")
        return self


@dataclass(frozen=True)
class FeedbackRecord:
    request_id: str
    ts: float
    team: str
    key_id: str
    rating: int | None
    correct_domain: str | None
    correct_expert: str | None
    note: str
    text: str
    routed_domain: str
    routed_expert: str
    route_reason: str
    request_ts: float
    classifier_version: str = ""
    arm: str = ""
    confidence: float | None = None
    out_of_scope: bool | None = None

    @property
    def label(self) -> tuple[str | None, LabelSource | None]:
        if self.correct_domain:
            return self.correct_domain, "correction"
        if self.rating == 1 and self.routed_domain:
            return self.routed_domain, "confirmed"
        return None, None

    def training_row(self) -> dict[str, Any]:
        label, source = self.label
        expert = self.correct_expert or (self.routed_expert if self.rating == 1 else None)
        return {
            "text": self.text or None,
            "domain": label,
            "expert": expert,
            "label_source": source,
            "request_id": self.request_id,
            "rating": self.rating,
            "routed_domain": self.routed_domain,
            "routed_expert": self.routed_expert,
            "route_reason": self.route_reason,
            "classifier_version": self.classifier_version or None,
            "arm": self.arm or None,
            "confidence": self.confidence,
            "out_of_scope": self.out_of_scope,
            "note": self.note or None,
            "team": self.team,
            "ts": self.ts,
        }

    def to_hash(self) -> dict[str, str]:
        return {k: "" if v is None else str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> FeedbackRecord:
        def opt(name: str) -> str | None:
            return h.get(name) or None

        return cls(
            request_id=h["request_id"],
            ts=float(h["ts"]),
            team=h.get("team", ""),
            key_id=h.get("key_id", ""),
            rating=int(h["rating"]) if h.get("rating") else None,
            correct_domain=opt("correct_domain"),
            correct_expert=opt("correct_expert"),
            note=h.get("note", ""),
            text=h.get("text", ""),
            routed_domain=h.get("routed_domain", ""),
            routed_expert=h.get("routed_expert", ""),
            route_reason=h.get("route_reason", ""),
            request_ts=float(h.get("request_ts") or 0),
            classifier_version=h.get("classifier_version", ""),
            arm=h.get("arm", ""),
            confidence=float(h["confidence"]) if h.get("confidence") else None,
            out_of_scope=(h["out_of_scope"] == "True") if h.get("out_of_scope") else None,
        )


@dataclass(frozen=True)
class RequestNote:
    """What the gateway notes per routed request (only with feedback.keep_prompts)."""

    request_id: str
    text: str
    label: str
    confidence: float
    out_of_scope: bool
    classifier_version: str = ""
    arm: str = "current"


class FeedbackStore:
    def __init__(
        self,
        redis: Redis,
        records: RecordLookup,
        *,
        prefix: str = "slm",
        policy: FeedbackPolicy | None = None,
        retention_s: int = DEFAULT_RETENTION_S,
    ) -> None:
        self.redis = redis
        self.records = records  # e.g. Ledger.get
        self.prefix = prefix
        self.policy = policy or FeedbackPolicy()
        self.retention_s = retention_s
        self._pending: set[asyncio.Task[None]] = set()
        self.dropped_notes = 0

    # ---- per request (hot path: one create_task, never waits, never raises) ------------------

    def note(self, n: RequestNote) -> None:
        if not self.policy.keep_prompts:
            return
        if len(self._pending) >= self.policy.max_pending:
            self.dropped_notes += 1  # Redis far behind: feedback loses its text, answers don't wait
            return
        try:
            task = asyncio.get_running_loop().create_task(self._write_note(n))
        except RuntimeError:
            return
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write_note(self, n: RequestNote) -> None:
        key = f"{self.prefix}:fb:req:{n.request_id}"
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, mapping={k: str(v) for k, v in asdict(n).items()})
                pipe.expire(key, self.policy.prompt_ttl_s)
                await pipe.execute()
        except Exception as exc:  # a lost note only costs a future feedback its text
            log.debug("feedback: could not note request %s: %r", n.request_id, exc)

    async def drain(self) -> None:
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # ---- feedback ------------------------------------------------------------------------

    async def submit(
        self,
        fb: FeedbackIn,
        key: KeyInfo | None,
        *,
        domains: Collection[str] | None = None,
        experts: Collection[str] | None = None,
    ) -> FeedbackRecord:
        _check_name(fb.correct_domain, domains, "correct_domain", "domain")
        _check_name(fb.correct_expert, experts, "correct_expert", "expert")
        rec = await self.records(fb.request_id)
        if rec is None or (key is not None and not key.admin and rec.team != key.team):
            raise NotFound(
                f"no routed request with id {fb.request_id!r} for this key "
                "(ids are in each answer's x-request-id header)",
                param="request_id",
                code="unknown_request_id",
            )
        noted: dict[str, str] = await self.redis.hgetall(f"{self.prefix}:fb:req:{fb.request_id}")  # type: ignore[assignment]
        out = FeedbackRecord(
            request_id=fb.request_id,
            ts=time.time(),
            team=rec.team,
            key_id=key.key_id if key else "",
            rating=fb.rating,
            correct_domain=fb.correct_domain,
            correct_expert=fb.correct_expert,
            note=fb.note or "",
            text=fb.text or noted.get("text", ""),
            routed_domain=rec.domain,
            routed_expert=rec.expert,
            route_reason=rec.route_reason,
            request_ts=rec.ts,
            classifier_version=noted.get("classifier_version", ""),
            arm=noted.get("arm", ""),
            confidence=float(noted["confidence"]) if noted.get("confidence") else None,
            out_of_scope=(noted["out_of_scope"] == "True") if noted.get("out_of_scope") else None,
        )
        key_name = f"{self.prefix}:fb:{fb.request_id}"
        # One MULTI on one Redis; on a cluster the record and the index are in two slots.
        async with self.redis.pipeline(transaction=not is_cluster(self.redis)) as pipe:
            pipe.delete(key_name)  # a second feedback replaces the first, field for field
            pipe.hset(key_name, mapping=out.to_hash())  # type: ignore[arg-type]
            pipe.expire(key_name, self.retention_s)
            pipe.zadd(f"{self.prefix}:fb:idx", {fb.request_id: out.ts})
            await pipe.execute()
        return out

    async def get(self, request_id: str) -> FeedbackRecord | None:
        h: dict[str, str] = await self.redis.hgetall(f"{self.prefix}:fb:{request_id}")  # type: ignore[assignment]
        return FeedbackRecord.from_hash(h) if h else None

    async def records_between(
        self, since: float | None = None, until: float | None = None, batch: int = 500
    ) -> list[FeedbackRecord]:
        ids: list[str] = await self.redis.zrangebyscore(  # type: ignore[assignment]
            f"{self.prefix}:fb:idx",
            "-inf" if since is None else since,
            "+inf" if until is None else until,
        )
        out: list[FeedbackRecord] = []
        for start in range(0, len(ids), batch):
            async with self.redis.pipeline(transaction=False) as pipe:
                for rid in ids[start : start + batch]:
                    pipe.hgetall(f"{self.prefix}:fb:{rid}")
                hashes = await pipe.execute()
            out.extend(FeedbackRecord.from_hash(h) for h in hashes if h)  # expired: skipped
        return out

    async def export(
        self, since: float | None = None, until: float | None = None, *, labelled_only: bool = True
    ) -> list[dict[str, Any]]:
        """Training rows, oldest first; with `labelled_only`, rows with both text and a label."""
        rows = [r.training_row() for r in await self.records_between(since, until)]
        if labelled_only:
            rows = [r for r in rows if r["text"] and r["domain"]]
        return rows


def _check_name(value: str | None, known: Collection[str] | None, param: str, what: str) -> None:
    if value is None or known is None or value in known:
        return
    from policies.issues import did_you_mean

    close = did_you_mean(value, known)
    hint = f" (did you mean {close!r}?)" if close else ""
    raise InvalidRequest(
        f"unknown {what} {value!r}{hint}; known: {', '.join(sorted(known))}",
        param=param,
        code=f"unknown_{what}",
    )
