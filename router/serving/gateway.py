"""The ingress's request handling, between HTTP and the RouterService. No Ray imports.

One flow per request: open the ticket, route (RouterService.route), run the plan's chain, close
the ticket once, render. Chat, the Responses API (a chat request with its own Render) and
embeddings share it; streams are written by a StreamWriter (chat.completion.chunk or Responses
events) while this module keeps the counting and the one honest ending.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from experts.base import Completion, StreamChunk
from policies.types import RoutePlan
from router.continuous.feedback import clean_request_id
from router.errors import envelope
from router.serving.accounting import (
    Accounting,
    Outcome,
    Ticket,
    chat_prompt_bound,
    texts_prompt_bound,
)
from router.serving.catalog import Describable
from router.serving.http.headers import clean
from router.serving.openai_embeddings import EmbeddingsRequest, embeddings_body
from router.serving.openai_render import ChatRender
from router.serving.openai_types import ChatCompletionRequest
from router.serving.service import OpenStream, Routable, Routed, RouterService, translate

log = logging.getLogger("slm_router")


class Expert(Describable, Protocol):
    async def health(self) -> bool: ...


class StreamWriter(Protocol):
    """The events of one stream: start, a piece per chunk, then finish or failed."""

    def start(self) -> list[bytes]: ...

    def piece(self, chunk: StreamChunk) -> list[bytes]: ...

    def failed(self, error_body: dict[str, Any]) -> list[bytes]: ...

    def finish(self, finish_reason: str, prompt: int, completion: int) -> list[bytes]: ...


class Render(Protocol):
    """How an answer is written: chat.completion (ChatRender) or a Responses API response."""

    def body(self, expert: str, c: Completion) -> dict[str, Any]: ...

    def writer(self, expert: str) -> StreamWriter: ...


def routing_headers(routed: Routed, expert: str, request_id: str) -> dict[str, str]:
    return {
        "x-slm-router-expert": clean(expert),
        "x-slm-router-domain": clean(routed.plan.domain),
        "x-slm-router-reason": clean(routed.plan.reason),
        "x-request-id": request_id,
    }


def request_id_of(headers: Mapping[str, str]) -> str:
    """The client's own X-Request-Id when it is a valid id (Serve's proxy sets one when the
    client did not), else a new one: the id of the ledger record, spans, logs and feedback."""
    given = headers.get("x-request-id")
    rid = clean_request_id(given) if given and not given.startswith("chatcmpl-") else None
    return rid or uuid.uuid4().hex


@dataclass
class ChatResult:
    status: int
    headers: dict[str, str]
    body: dict[str, Any] | None = None
    stream: AsyncIterator[bytes] | None = None


class Gateway:
    def __init__(
        self,
        service: RouterService,
        experts: Mapping[str, Expert],
        accounting: Accounting | None = None,
    ) -> None:
        self.service = service
        self.experts = experts
        self.accounting = accounting or Accounting(service.config)
        self.started = time.time()

    @property
    def config(self) -> Any:
        return self.service.config

    # ---- one request: ticket, route, run, close ------------------------------------------
    async def _open(
        self, req: Routable, headers: Mapping[str, str], **sizes: Any
    ) -> tuple[Ticket, Routed | None]:
        self.service.check(req)
        acct = self.accounting
        ticket = await acct.open(headers, request_id=request_id_of(headers), **sizes)
        with acct.current(ticket):
            try:
                routed = await self.service.route(
                    req,
                    request_id=ticket.request_id,
                    team=ticket.key.team if ticket.key else None,
                    key_id=ticket.key.key_id if ticket.key else None,
                    budget_used_fraction=ticket.used_fraction,
                    trace=acct,
                )
            except Exception as exc:
                await self._failed(ticket, None, exc)
                raise
        acct.observe_route(ticket, routed)
        return ticket, routed

    async def _failed(self, ticket: Ticket, plan: RoutePlan | None, exc: Exception) -> None:
        status, _, _ = envelope(exc)
        where, domain = (plan.expert, plan.domain) if plan else ("", "")
        await self.accounting.close(ticket, Outcome(where, domain, status=status, error=exc))

    # ---- chat ----------------------------------------------------------------------------
    async def chat(
        self, req: ChatCompletionRequest, headers: Mapping[str, str], render: Render | None = None
    ) -> ChatResult:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        ticket, routed = await self._open(
            req,
            headers,
            model=req.model or "auto",
            stream=req.stream,
            prompt_tokens=chat_prompt_bound(req),
            max_tokens=req.max_completion_tokens or req.max_tokens,  # None: expert's default
        )
        assert routed is not None
        # The completion's `id` names the request, so feedback can be given with either.
        render = render or ChatRender(include_usage, f"chatcmpl-{ticket.request_id}")
        plan, acct = routed.plan, self.accounting
        with acct.current(ticket):
            try:
                if req.stream:
                    opened = await self.service.open_stream(req, plan, acct)
                    ticket.mark_first_token()
                    headers_out = routing_headers(routed, opened.expert, ticket.request_id)
                    writer = render.writer(opened.expert)
                    return ChatResult(
                        200, headers_out, stream=self._sse(writer, opened, ticket, plan)
                    )
                expert, completion, _ = await self.service.complete(req, plan, acct)
            except Exception as exc:
                await self._failed(ticket, plan, exc)
                raise
            await acct.close(
                ticket,
                Outcome(
                    expert,
                    plan.domain,
                    completion.prompt_tokens,
                    completion.completion_tokens,
                    reason=plan.reason,
                ),
            )
        body = render.body(expert, completion)
        return ChatResult(200, routing_headers(routed, expert, ticket.request_id), body=body)

    async def _sse(
        self, writer: StreamWriter, opened: OpenStream, ticket: Ticket, plan: RoutePlan
    ) -> AsyncIterator[bytes]:
        model = opened.expert
        completion_tokens = 0
        outcome = Outcome(model, plan.domain, reason=plan.reason, status=499)
        try:
            for event in writer.start():
                yield event
            last: StreamChunk = opened.first
            try:
                chunk: StreamChunk | None = opened.first
                while chunk is not None:
                    last = chunk
                    if not chunk.is_empty:
                        completion_tokens += 1
                        for event in writer.piece(chunk):
                            yield event
                    if chunk.finish_reason is not None:
                        break
                    chunk = await anext(opened.rest, None)
            except Exception as exc:  # after the first token the only honest move is an error event
                err = translate(exc, model)
                status, body, _ = envelope(err)
                log.warning("stream from %s failed mid-way: %s", model, body["error"]["message"])
                outcome = Outcome(
                    model, plan.domain, 0, completion_tokens, status, err, plan.reason
                )
                for event in writer.failed(body):
                    yield event
                return
            prompt_tokens = last.prompt_tokens or 0
            if last.completion_tokens is not None:
                completion_tokens = last.completion_tokens
            outcome = Outcome(
                model, plan.domain, prompt_tokens, completion_tokens, reason=plan.reason
            )
            finish = last.finish_reason or "stop"
            for event in writer.finish(finish, prompt_tokens, completion_tokens):
                yield event
        finally:
            # Also runs when the client disconnects (status 499): the record is never dropped,
            # and it bills the tokens the client was sent (accounting fills in the prompt).
            if outcome.status == 499:
                outcome = replace(outcome, completion_tokens=completion_tokens)
            await self.accounting.close(ticket, outcome)

    # ---- embeddings ----------------------------------------------------------------------
    async def embeddings(self, req: EmbeddingsRequest, headers: Mapping[str, str]) -> ChatResult:
        texts = req.texts()
        ticket, routed = await self._open(
            req,
            headers,
            model=req.model or "auto",
            stream=False,
            prompt_tokens=texts_prompt_bound(texts),
            max_tokens=0,
        )
        assert routed is not None
        plan, acct = routed.plan, self.accounting
        with acct.current(ticket):
            try:
                expert, emb, _ = await self.service.embed(texts, req.params(), plan, acct)
            except Exception as exc:
                await self._failed(ticket, plan, exc)
                raise
            await acct.close(
                ticket, Outcome(expert, plan.domain, emb.prompt_tokens, 0, reason=plan.reason)
            )
        body = embeddings_body(expert, emb, req.encoding_format)
        return ChatResult(200, routing_headers(routed, expert, ticket.request_id), body=body)

    # ---- dry run, models, health ---------------------------------------------------------
    async def route(self, req: ChatCompletionRequest) -> dict[str, Any]:
        """The dry run: what a chat request would get, capability filtering included."""
        self.service.check(req)
        routed = await self.service.route(req, request_id=uuid.uuid4().hex, observe=False)
        plan = routed.plan
        return {
            "object": "route",
            "classification": routed.classification.to_dict(),
            "plan": {
                "expert": plan.expert,
                "fallbacks": list(plan.fallbacks),
                "domain": plan.domain,
                "reason": plan.reason,
                "rules": list(plan.trace),
                "shadow": plan.shadow,
                "skipped": list(plan.skipped),
            },
            "needs": sorted(routed.needs),
        }

    async def models(self) -> dict[str, Any]:
        created = int(self.started)
        data: list[dict[str, Any]] = [
            {
                "id": "auto",
                "object": "model",
                "created": created,
                "owned_by": "slm-router",
                "metadata": {
                    "routed": True,
                    "experts": sorted(self.config.experts),
                    **self._classifier_identity(),
                },
            }
        ]
        catalog = self.service.catalog
        infos = await asyncio.gather(*(catalog.info(n) for n in self.config.experts))
        for (name, spec), info in zip(self.config.experts.items(), infos, strict=True):
            meta: dict[str, Any] = {"backend": spec.backend, "description": spec.description}
            if info is not None:
                meta.update(model=info.model, context_window=info.context_window, **info.metadata)
            # What routing relies on: derived by the backend, the YAML's overrides on top.
            meta["capabilities"] = catalog.capabilities_of(name).to_dict()
            data.append(
                {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": "slm-router",
                    "metadata": meta,
                }
            )
        return {"object": "list", "data": data}

    def _classifier_identity(self) -> dict[str, Any]:
        cont = self.service.continuous
        out: dict[str, Any] = {"classifier": cont.live_identity}
        if cont.candidate_identity:
            out["candidate_classifier"] = cont.candidate_identity
        return out

    async def ready(self) -> dict[str, bool]:
        async def one(name: str) -> bool:
            try:
                async with asyncio.timeout(5):  # not wait_for: it can drop a cancel on 3.11
                    return bool(await self.experts[name].health())
            except Exception:
                return False

        names = list(self.config.experts)
        results = await asyncio.gather(*(one(n) for n in names))
        return dict(zip(names, results, strict=True))
