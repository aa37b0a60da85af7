"""Per-request bookkeeping: who is calling, may they, what it cost, and the trace of it.

The Gateway opens a Ticket before routing and closes it exactly once when the answer (or the
error) is complete. Closing never raises and never waits on Redis: the ledger queues the record.
Every part is optional, so the same gateway runs with no Redis (tests, a bare laptop) or all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from router.finance.access import Access
from router.finance.costs import FREE, estimate_nano, nano_to_usd, request_cost
from router.finance.ledger_types import CostRecord

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from router.config import AppConfig
    from router.finance.budgets import Limiter, Reservation
    from router.finance.keys import KeyInfo
    from router.finance.ledger import Ledger
    from router.serving.openai_types import ChatCompletionRequest
    from router.serving.service import Routed
    from router.serving.telemetry import Telemetry

log = logging.getLogger("slm_router")
ANONYMOUS_TEAM = "default"

# Admission reserves an upper bound, never a guess (docs/ARCHITECTURE.md, "Budgets"): every
# tokenizer we serve (byte-level BPE, SentencePiece with byte fallback) spends at most one token
# per UTF-8 byte of text, plus what the chat template adds around each message and the prompt.
MESSAGE_OVERHEAD_TOKENS = 16
PROMPT_OVERHEAD_TOKENS = 64
IMAGE_TOKENS = 2048  # a vision expert's tiles for one image part, whatever its URL's length
# An expert without `context_window` is assumed to be able to write this much; a request's
# max_tokens beyond an expert's window is capped to it before estimating.
DEFAULT_WINDOW_TOKENS = 1 << 20
_MAX_ESTIMATE = (1 << 53) - 1  # Lua numbers are doubles: keep every reservation exact


def chat_prompt_bound(req: ChatCompletionRequest) -> int:
    """At most how many tokens the request's prompt can be: every message as JSON (role, name,
    content, tool calls), the tool definitions and the response format, in UTF-8 bytes."""
    msgs = [m.model_dump_json(exclude_none=True) for m in req.messages]
    extra = [t.model_dump_json() for t in req.tools or ()]
    if req.response_format is not None:
        extra.append(req.response_format.model_dump_json())
    images = sum(m.count('"image_url"') for m in msgs)
    return texts_prompt_bound([*msgs, *extra]) + images * IMAGE_TOKENS


def texts_prompt_bound(texts: Iterable[str]) -> int:
    """The bound for a list of texts (messages, or the inputs of an embeddings call)."""
    items = list(texts)
    body = sum(len(t.encode("utf-8", "surrogatepass")) for t in items)
    return body + MESSAGE_OVERHEAD_TOKENS * len(items) + PROMPT_OVERHEAD_TOKENS


@dataclass
class Ticket:
    request_id: str
    model: str
    stream: bool
    started: float = field(default_factory=time.monotonic)
    ts: float = field(default_factory=time.time)
    key: KeyInfo | None = None
    reservation: Reservation | None = None
    span: Span | None = None
    first_token_at: float | None = None
    closed: bool = False
    prompt_bound: int = 0  # admission's upper bound, billed when the real count never came

    @property
    def team(self) -> str:
        return self.key.team if self.key else ANONYMOUS_TEAM

    @property
    def used_fraction(self) -> float | None:
        return self.reservation.used_fraction if self.reservation else None

    def mark_first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()


@dataclass(frozen=True)
class Outcome:
    expert: str
    domain: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    status: int = 200
    error: BaseException | None = None
    reason: str = ""


class Accounting:
    def __init__(
        self,
        config: AppConfig,
        *,
        access: Access | None = None,
        telemetry: Telemetry | None = None,
        ledger: Ledger | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self.config = config
        self.access = access or Access(config.gateway.auth)
        self.telemetry = telemetry
        self.ledger = ledger
        self.limiter = limiter
        self._ledger_started = False
        self._closing: set[asyncio.Future[None]] = set()  # closes outliving a cancelled caller
        baseline = config.gateway.baseline_expert or config.routing.fallback
        self.baseline_price = config.experts[baseline].price if baseline in config.experts else None

    # ---- opening -------------------------------------------------------------------------
    async def open(
        self,
        headers: Mapping[str, str],
        *,
        request_id: str,
        model: str,
        stream: bool,
        prompt_tokens: int,
        max_tokens: int | None,
    ) -> Ticket:
        """`prompt_tokens`: an upper bound (chat_prompt_bound); `max_tokens`: the request's, or
        None when unset (each expert's own default then applies)."""
        ticket = Ticket(request_id, model, stream, prompt_bound=prompt_tokens)
        if self.telemetry is not None:
            ticket.span = self.telemetry.start_request_span(
                headers, model=model, request_id=request_id, max_tokens=max_tokens or 0
            )
        try:
            ticket.key = await self.access.authenticate(headers.get("authorization"))
            if ticket.key is not None and self.limiter is not None:
                nano, tokens = self.estimate(prompt_tokens, max_tokens)
                ticket.reservation = await self.limiter.admit(ticket.key, nano, tokens)
        except BaseException as exc:
            self._end_span(ticket, exc)
            raise
        if ticket.span is not None:
            ticket.span.set_attribute("slm_router.team", ticket.team)
        return ticket

    def estimate(self, prompt_tokens: int, max_tokens: int | None) -> tuple[int, int]:
        """(nano-USD, tokens) to reserve: the worst case over the experts a request may land on
        (routing, fallback), each with its output capped to its window, so that a budget is
        overshot by at most one admitted request whatever its shape."""
        worst_nano, worst_tokens = 0, 0
        for spec in self.config.experts.values():
            window = spec.effective_context_window or DEFAULT_WINDOW_TOKENS
            out = spec.max_tokens_default if max_tokens is None else max_tokens
            inp, out = min(prompt_tokens, window), min(max(out, 0), window)
            worst_nano = max(worst_nano, estimate_nano(spec.price, inp, out))
            worst_tokens = max(worst_tokens, inp + out)
        return min(worst_nano, _MAX_ESTIMATE), min(worst_tokens, _MAX_ESTIMATE)

    # ---- tracing helpers ------------------------------------------------------------------
    @contextlib.contextmanager
    def current(self, ticket: Ticket) -> Iterator[None]:
        """Make the request span current for a stretch of work in one task."""
        if ticket.span is None:
            yield
            return
        from opentelemetry import trace

        with trace.use_span(ticket.span, end_on_exit=False):
            yield

    @contextlib.contextmanager
    def child(self, name: str, **attrs: Any) -> Iterator[None]:
        if self.telemetry is None:
            yield
            return
        with self.telemetry.child(name, **attrs):
            yield

    def attempt(self, expert: str, attempt: int) -> contextlib.AbstractContextManager[object]:
        if self.telemetry is None:
            return contextlib.nullcontext()
        spec = self.config.experts.get(expert)
        return self.telemetry.expert_attempt(expert, spec.model if spec else expert, attempt)

    def observe_route(self, ticket: Ticket, routed: Routed) -> None:
        if self.telemetry is None:
            return
        plan = routed.plan
        if ticket.span is not None:
            self.telemetry.set_route(
                ticket.span,
                domain=plan.domain,
                confidence=routed.classification.confidence,
                reason=plan.reason,
                expert=plan.expert,
            )
        self.telemetry.observe_decision(domain=plan.domain, expert=plan.expert)
        self.telemetry.observe_classifier(routed.classify_s, self.config.classifier.kind)

    # ---- closing -------------------------------------------------------------------------
    async def close(self, ticket: Ticket, outcome: Outcome) -> None:
        """Settle, record and end the trace, once; never raises.

        A client that hangs up mid-stream gets this task cancelled while it settles; the work
        runs in a task of its own under shield(), so the settle and the ledger record still land.
        """
        if ticket.closed:
            return
        ticket.closed = True
        task = asyncio.ensure_future(self._close_once(ticket, outcome))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        await asyncio.shield(task)

    async def _close_once(self, ticket: Ticket, outcome: Outcome) -> None:
        if outcome.status == 499 and outcome.prompt_tokens == 0:
            # Abandoned before the upstream's usage arrived: bill the prompt at its bound.
            outcome = replace(outcome, prompt_tokens=ticket.prompt_bound)
        try:
            with self.current(ticket):
                await self._close(ticket, outcome)
        except Exception:  # bookkeeping must never turn an answer into an error
            log.exception("accounting: closing request %s failed", ticket.request_id)
        finally:
            self._end_span(ticket, outcome.error)

    async def _close(self, ticket: Ticket, o: Outcome) -> None:
        now = time.monotonic()
        latency_s = now - ticket.started
        ttft_s = (ticket.first_token_at - ticket.started) if ticket.first_token_at else None
        spec = self.config.experts.get(o.expert)
        cost = request_cost(
            spec.price if spec else FREE,
            self.baseline_price,
            o.prompt_tokens,
            o.completion_tokens,
            busy_seconds=latency_s if o.error is None else 0.0,
        )
        if ticket.reservation is not None and self.limiter is not None:
            await self.limiter.settle(
                ticket.reservation, cost.cost_nano, o.prompt_tokens + o.completion_tokens
            )
        if self.ledger is not None:
            if not self._ledger_started:
                self._ledger_started = True
                await self.ledger.start()  # the spool replay loop needs a running event loop
            with self.child("ledger.write"):
                await self.ledger.record(
                    self._record(ticket, o, cost.cost_nano, cost.baseline_nano, latency_s, ttft_s)
                )
        if self.telemetry is not None:
            self._observe(ticket, o, latency_s, ttft_s, cost.cost_nano, cost.baseline_nano)

    def _record(
        self,
        t: Ticket,
        o: Outcome,
        cost: int,
        baseline: int,
        latency_s: float,
        ttft_s: float | None,
    ) -> CostRecord:
        return CostRecord(
            request_id=t.request_id,
            ts=t.ts,
            team=t.team,
            expert=o.expert,
            domain=o.domain,
            input_tokens=o.prompt_tokens,
            output_tokens=o.completion_tokens,
            cost_nano=cost,
            baseline_nano=baseline,
            latency_ms=latency_s * 1000,
            ttft_ms=None if ttft_s is None else ttft_s * 1000,
            status=o.status,
            error_type=getattr(o.error, "error_type", "")
            or (type(o.error).__name__ if o.error else ""),
            key_id=t.key.key_id if t.key else "",
            model=t.model,
            route_reason=o.reason,
        )

    def _observe(
        self,
        t: Ticket,
        o: Outcome,
        latency_s: float,
        ttft_s: float | None,
        cost: int,
        baseline: int,
    ) -> None:
        assert self.telemetry is not None
        cost_usd, baseline_usd = float(nano_to_usd(cost)), float(nano_to_usd(baseline))
        if t.span is not None:
            self.telemetry.set_usage(
                t.span,
                response_model=o.expert,
                input_tokens=o.prompt_tokens,
                output_tokens=o.completion_tokens,
                cost_usd=cost_usd,
                baseline_usd=baseline_usd,
            )
        self.telemetry.observe_request(
            expert=o.expert,
            domain=o.domain,
            duration_s=latency_s,
            status=o.status,
            stream=t.stream,
            ttft_s=ttft_s,
            input_tokens=o.prompt_tokens,
            output_tokens=o.completion_tokens,
            cost_usd=cost_usd,
            baseline_usd=baseline_usd,
            team=t.team,
        )
        if o.error is not None:
            self.telemetry.observe_error(
                getattr(o.error, "error_type", None) or type(o.error).__name__, o.expert
            )

    def _end_span(self, ticket: Ticket, error: BaseException | None) -> None:
        if ticket.span is None:
            return
        if error is not None and self.telemetry is not None:
            self.telemetry.set_error(ticket.span, error)
        ticket.span.end()
