"""The gateway's core, the one way through a request: pin -> classify -> plan (`route`), then
the plan's chain with fallback (`complete` / `open_stream`, one loop for both). No Ray here.

Experts and the classifier are reached through two small protocols, so the same service runs
in-process in tests (backends directly) and inside the Serve ingress (deployment handles). The
caller passes a Trace (the Accounting) for spans around each step; tests pass nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from classifiers.base import Classification
from experts.base import (
    Completion,
    EmbeddingParams,
    Embeddings,
    GenerationParams,
    Message,
    ModelInfo,
    StreamChunk,
)
from experts.errors import ExpertError, ExpertOverloaded, ExpertTimeout, ExpertUnavailable
from policies.compiled import CompiledPolicy
from policies.engine import decide
from policies.types import RequestContext, RoutePlan, Scores
from router.config import AppConfig
from router.continuous.arms import ClassifierCaller
from router.continuous.live import Continuous
from router.errors import InvalidRequest
from router.serving.catalog import Catalog
from router.serving.livestats import LiveStats
from router.serving.openai_types import ChatCompletionRequest

log = logging.getLogger("slm_router")
T = TypeVar("T")


class ExpertCaller(Protocol):
    async def generate(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> Completion: ...

    def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[StreamChunk]: ...

    async def embed(self, texts: Sequence[str], params: EmbeddingParams) -> Embeddings: ...

    async def describe(self) -> ModelInfo: ...


class Routable(Protocol):
    """What routing reads from a request (chat, a Responses request as chat, embeddings)."""

    @property
    def model(self) -> str | None: ...

    @property
    def user(self) -> str | None: ...

    def routing_text(self) -> str: ...

    def needs(self) -> frozenset[str]: ...


# Requests that are not chat (embeddings) are not classified: the engine picks from the experts
# that can serve them.
UNCLASSIFIED = Classification({}, "embeddings", 1.0, False)


class Trace(Protocol):
    """Spans around the steps: "classify", "decide", and one per expert attempt."""

    def child(self, name: str) -> contextlib.AbstractContextManager[object]: ...

    def attempt(self, expert: str, attempt: int) -> contextlib.AbstractContextManager[object]: ...


class NoTrace:
    def child(self, name: str) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()

    def attempt(self, expert: str, attempt: int) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()


NO_TRACE = NoTrace()


@dataclass(frozen=True)
class Routed:
    plan: RoutePlan
    classification: Classification
    classify_s: float = 0.0  # seconds the classify step took
    needs: frozenset[str] = frozenset()  # the capabilities the request needs


@dataclass
class Attempt:
    expert: str
    error: str | None = None
    retry_after: float | None = None


@dataclass
class OpenStream:
    """A stream whose first chunk has arrived: the expert is settled, headers can be sent."""

    expert: str
    first: StreamChunk
    rest: AsyncIterator[StreamChunk]
    attempts: list[Attempt]


def pinned(model: str | None) -> str | None:
    """The expert a request's `model` pins, or None when it is routed ("auto" or omitted).
    Unknown or refused pins are the engine's call (404/400/403 with a suggestion)."""
    return None if model is None or model == "auto" else model


def scores_of(c: Classification) -> Scores:
    return Scores(c.label, c.confidence, c.out_of_scope, c.escalate)


def unwrap(exc: BaseException) -> BaseException:
    """Ray wraps errors raised in a replica; the cause carries our status and type."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def translate(exc: BaseException, expert: str) -> BaseException:
    """Turn anything an expert call raised into an error that says what happened."""
    exc = unwrap(exc)
    if isinstance(exc, ExpertError):
        return exc
    if isinstance(exc, TimeoutError):
        return ExpertTimeout(f"expert '{expert}' timed out")
    if type(exc).__name__ == "BackPressureError":  # Serve: the deployment's queue is full
        err = ExpertOverloaded(f"expert '{expert}' is at capacity; retry shortly")
        err.retry_after = getattr(exc, "retry_after_s", None) or 1.0
        return err
    if hasattr(exc, "status_code") and hasattr(exc, "error_type"):
        return exc
    # Replica died, actor unreachable, handle errors: the next expert may still answer.
    return ExpertUnavailable(f"expert '{expert}' failed: {type(exc).__name__}")


class RouterService:
    def __init__(
        self,
        config: AppConfig,
        classifier: ClassifierCaller,
        experts: Mapping[str, ExpertCaller],
        stats: LiveStats | None = None,
        continuous: Continuous | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.config = config
        self.policy = CompiledPolicy.build(config.routing, config.experts)
        self.experts = experts
        self.catalog = catalog or Catalog(config.experts, experts)
        self.stats = stats or LiveStats()
        # Without a rollout, Continuous asks the live classifier straight (a null-object arm).
        self.continuous = continuous or Continuous(config, classifier)

    # ---- routing -------------------------------------------------------------------------
    def check(self, req: Routable) -> None:
        """Refuse what this policy can never route, before anything is spent on it."""
        if req.model is None and not self.config.routing.auto_when_model_omitted:
            raise InvalidRequest("`model` is required by this gateway's policy", param="model")

    async def route(
        self,
        req: Routable,
        *,
        request_id: str,
        team: str | None = None,
        key_id: str | None = None,
        budget_used_fraction: float | None = None,
        observe: bool = True,
        trace: Trace = NO_TRACE,
    ) -> Routed:
        """Pin -> classify -> plan. The classification is the one routing uses (a canary
        user's comes from the candidate); `observe` feeds drift windows and feedback notes
        (not for dry runs). The plan keeps only experts that can do what the request needs."""
        needs = req.needs()
        classification, classify_s = UNCLASSIFIED, 0.0
        if "chat" in needs:
            text = req.routing_text()
            with trace.child("classify"):
                t0 = time.perf_counter()
                choice = await self.continuous.classify(
                    text, user=req.user, key_id=key_id, team=team, request_id=request_id
                )
                if observe:
                    self.continuous.observe(choice, request_id, text)
                classify_s = time.perf_counter() - t0
            classification = choice.classification
        capabilities = await self.catalog.features()
        with trace.child("decide"):
            plan = self.plan(
                req, classification, request_id, team, budget_used_fraction, capabilities
            )
        return Routed(plan, classification, classify_s, needs)

    def plan(
        self,
        req: Routable,
        classification: Classification,
        request_id: str,
        team: str | None = None,
        budget_used_fraction: float | None = None,
        capabilities: Mapping[str, frozenset[str]] | None = None,
    ) -> RoutePlan:
        ctx = RequestContext(
            text=req.routing_text(),
            pinned_model=pinned(req.model),
            team=team,
            user=req.user,
            request_id=request_id,
            budget_used_fraction=budget_used_fraction,
            needs=req.needs(),
        )
        return decide(
            self.policy, scores_of(classification), ctx, self.stats.snapshot(), capabilities
        )

    # ---- execution: the plan's chain, one attempt at a time ----------------------------------
    def params_for(self, req: ChatCompletionRequest, expert: str) -> GenerationParams:
        spec = self.config.experts[expert]
        return req.params(spec.max_tokens_default)

    async def complete(
        self, req: ChatCompletionRequest, plan: RoutePlan, trace: Trace = NO_TRACE
    ) -> tuple[str, Completion, list[Attempt]]:
        messages = req.to_messages()

        def generate(expert: str) -> Awaitable[Completion]:
            return self.experts[expert].generate(messages, self.params_for(req, expert))

        return await self._first_answer(plan, trace, generate)

    async def open_stream(
        self, req: ChatCompletionRequest, plan: RoutePlan, trace: Trace = NO_TRACE
    ) -> OpenStream:
        """The first chunk settles the expert: time to first token is a stream's latency, and
        a failure before it still moves on to the next expert."""
        messages = req.to_messages()

        async def first_chunk(expert: str) -> tuple[StreamChunk, AsyncIterator[StreamChunk]]:
            it = aiter(self.experts[expert].stream(messages, self.params_for(req, expert)))
            try:
                return await anext(it), it
            except StopAsyncIteration:
                return StreamChunk("", "stop", 0, 0), it
            except BaseException:  # also a timeout's cancellation: close what was opened
                await _aclose(it)
                raise

        expert, (first, rest), attempts = await self._first_answer(plan, trace, first_chunk)
        return OpenStream(expert, first, rest, attempts)

    async def embed(
        self,
        texts: Sequence[str],
        params: EmbeddingParams,
        plan: RoutePlan,
        trace: Trace = NO_TRACE,
    ) -> tuple[str, Embeddings, list[Attempt]]:
        def embed(expert: str) -> Awaitable[Embeddings]:
            return self.experts[expert].embed(texts, params)

        return await self._first_answer(plan, trace, embed)

    async def _first_answer(
        self, plan: RoutePlan, trace: Trace, attempt: Callable[[str], Awaitable[T]]
    ) -> tuple[str, T, list[Attempt]]:
        """The fallback loop: each expert of the chain in turn, with its timeout, until one
        answers; a client's error (not retryable) stops it at once."""
        attempts: list[Attempt] = []
        for expert in plan.chain:
            t0 = time.perf_counter()
            try:
                with trace.attempt(expert, len(attempts) + 1):
                    async with asyncio.timeout(self.config.experts[expert].timeout_s):
                        result = await attempt(expert)
            except Exception as exc:  # every failure is translated, then retried or raised
                err = self._failed(exc, expert, attempts)
                if err is not None:
                    raise err from None
                continue
            self.stats.record(expert, (time.perf_counter() - t0) * 1000, ok=True)
            attempts.append(Attempt(expert))
            return expert, result, attempts
        raise self._exhausted(attempts)

    def _failed(
        self, exc: BaseException, expert: str, attempts: list[Attempt]
    ) -> BaseException | None:
        """Record a failed attempt; return the error to raise if it must not be retried."""
        err = translate(exc, expert)
        message = getattr(err, "message", None) or str(err)
        attempts.append(Attempt(expert, message, getattr(err, "retry_after", None)))
        if getattr(err, "retryable", True):  # a client's error says nothing about the expert
            self.stats.record(expert, 0.0, ok=False)
        log.warning("expert %s failed: %s", expert, attempts[-1].error)
        if not getattr(err, "retryable", True):
            return err
        return None

    @staticmethod
    def _exhausted(attempts: list[Attempt]) -> ExpertError:
        waits = [a.retry_after for a in attempts if a.retry_after is not None]
        # Every expert at capacity: say so (429 + Retry-After), so clients back off and retry.
        cls = ExpertOverloaded if attempts and len(waits) == len(attempts) else ExpertUnavailable
        if len(attempts) == 1:
            last = attempts[0]
            err: ExpertError = cls(f"expert '{last.expert}' failed: {last.error}")
        else:
            tried = "; ".join(f"{a.expert}: {a.error}" for a in attempts)
            err = cls(f"every expert in the chain failed ({tried})")
        if cls is ExpertOverloaded:
            err.retry_after = min(waits)
        return err


async def _aclose(it: AsyncIterator[StreamChunk]) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:  # closing a broken stream must not mask the original error
            log.debug("closing a failed stream raised", exc_info=True)
