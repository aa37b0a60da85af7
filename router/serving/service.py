"""The gateway's core: classify, decide, run the plan's chain with fallback. No Ray here.

Experts and the classifier are reached through two small protocols, so the same service runs
in-process in tests (backends directly) and inside the Serve ingress (deployment handles).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from classifiers.base import Classification
from experts.base import Completion, GenerationParams, Message, StreamChunk
from experts.errors import ExpertError, ExpertOverloaded, ExpertTimeout, ExpertUnavailable
from policies.compiled import CompiledPolicy
from policies.engine import decide
from policies.types import RequestContext, RoutePlan, Scores
from router.config import AppConfig
from router.errors import InvalidRequest
from router.serving.livestats import LiveStats

if TYPE_CHECKING:
    from router.continuous.live import Continuous
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


class ClassifierCaller(Protocol):
    async def classify(self, text: str) -> Classification: ...


class AttemptTrace(Protocol):
    def __call__(self, expert: str, attempt: int) -> contextlib.AbstractContextManager[object]: ...


def no_trace(expert: str, attempt: int) -> contextlib.AbstractContextManager[object]:
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Routed:
    plan: RoutePlan
    classification: Classification


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
    ) -> None:
        self.config = config
        self.policy = CompiledPolicy.build(config.routing, config.experts)
        self.classifier = classifier
        self.experts = experts
        self.stats = stats or LiveStats()
        self.continuous = continuous

    # ---- routing -------------------------------------------------------------------------
    def pinned_model(self, model: str | None) -> str | None:
        """None for routed requests; the expert name for pinned ones."""
        if model is None:
            if not self.config.routing.auto_when_model_omitted:
                raise InvalidRequest("`model` is required by this gateway's policy", param="model")
            return None
        # Unknown or refused pins are the engine's call (404/400/403 with a suggestion).
        return None if model == "auto" else model

    async def classify(
        self,
        req: ChatCompletionRequest,
        *,
        request_id: str = "",
        team: str | None = None,
        key_id: str | None = None,
        observe: bool = True,
    ) -> tuple[Classification, float]:
        """The classification routing uses (a canary user's comes from the candidate), and the
        seconds it took. `observe` feeds drift windows and feedback notes (not for dry runs)."""
        t0 = time.perf_counter()
        text = req.last_user_text()
        if self.continuous is None:
            result = await self.classifier.classify(text)
        else:
            choice = await self.continuous.classify(
                text, user=req.user, key_id=key_id, team=team, request_id=request_id
            )
            if observe:
                self.continuous.observe(choice, request_id, text)
            result = choice.classification
        return result, time.perf_counter() - t0

    def plan(
        self,
        req: ChatCompletionRequest,
        classification: Classification,
        request_id: str,
        team: str | None = None,
        budget_used_fraction: float | None = None,
    ) -> RoutePlan:
        ctx = RequestContext(
            text=req.last_user_text(),
            pinned_model=self.pinned_model(req.model),
            team=team,
            user=req.user,
            request_id=request_id,
            budget_used_fraction=budget_used_fraction,
        )
        scores = Scores(
            classification.label,
            classification.confidence,
            classification.out_of_scope,
            classification.escalate,
        )
        return decide(self.policy, scores, ctx, self.stats.snapshot())

    async def route(
        self, req: ChatCompletionRequest, request_id: str, team: str | None = None
    ) -> Routed:
        self.pinned_model(req.model)  # refuse a bad `model` before spending a classification
        classification, _ = await self.classify(req, request_id=request_id, observe=False)
        return Routed(self.plan(req, classification, request_id, team), classification)

    # ---- execution -----------------------------------------------------------------------
    def params_for(self, req: ChatCompletionRequest, expert: str) -> GenerationParams:
        spec = self.config.experts[expert]
        return req.params(spec.max_tokens_default)

    def _timeout(self, expert: str) -> float:
        return self.config.experts[expert].timeout_s

    async def complete(
        self, req: ChatCompletionRequest, plan: RoutePlan, trace: AttemptTrace = no_trace
    ) -> tuple[str, Completion, list[Attempt]]:
        messages = req.to_messages()
        attempts: list[Attempt] = []
        for expert in plan.chain:
            caller = self.experts[expert]
            coro = caller.generate(messages, self.params_for(req, expert))
            t0 = time.perf_counter()
            try:
                with trace(expert, len(attempts) + 1):
                    result = await _with_timeout(coro, self._timeout(expert))
            except Exception as exc:  # every failure is translated, then retried or raised
                err = self._failed(exc, expert, attempts)
                if err is not None:
                    raise err from None
                continue
            self.stats.record(expert, (time.perf_counter() - t0) * 1000, ok=True)
            attempts.append(Attempt(expert))
            return expert, result, attempts
        raise self._exhausted(attempts)

    async def open_stream(
        self, req: ChatCompletionRequest, plan: RoutePlan, trace: AttemptTrace = no_trace
    ) -> OpenStream:
        messages = req.to_messages()
        attempts: list[Attempt] = []
        for expert in plan.chain:
            it = aiter(self.experts[expert].stream(messages, self.params_for(req, expert)))
            t0 = time.perf_counter()
            try:
                with trace(expert, len(attempts) + 1):
                    first = await _with_timeout(anext(it), self._timeout(expert))
            except StopAsyncIteration:
                first = StreamChunk("", "stop", 0, 0)
            except Exception as exc:
                await _aclose(it)
                err = self._failed(exc, expert, attempts)
                if err is not None:
                    raise err from None
                continue
            # Time to first token is what a stream's caller waits for: that is its latency here.
            self.stats.record(expert, (time.perf_counter() - t0) * 1000, ok=True)
            attempts.append(Attempt(expert))
            return OpenStream(expert, first, it, attempts)
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


async def _with_timeout(aw: Awaitable[T], timeout_s: float) -> T:
    async with asyncio.timeout(timeout_s):
        return await aw


async def _aclose(it: AsyncIterator[StreamChunk]) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:  # closing a broken stream must not mask the original error
            log.debug("closing a failed stream raised", exc_info=True)
