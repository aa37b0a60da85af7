"""The ingress's request handling, between HTTP and the RouterService. No Ray imports."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from experts.base import ModelInfo, StreamChunk
from policies.types import RoutePlan
from router.errors import envelope
from router.serving.accounting import Accounting, Outcome, Ticket
from router.serving.openai_types import (
    ChatCompletionRequest,
    chunk_body,
    completion_body,
    new_id,
    usage_chunk_body,
)
from router.serving.service import OpenStream, Routed, RouterService, translate

log = logging.getLogger("slm_router")


class Describable(Protocol):
    async def describe(self) -> ModelInfo: ...

    async def health(self) -> bool: ...


def _header_safe(text: str, limit: int = 300) -> str:
    """Header values must be latin-1 and single-line."""
    text = " ".join(text.split())[:limit]
    return text.encode("latin-1", "replace").decode("latin-1")


def routing_headers(routed: Routed, expert: str, request_id: str) -> dict[str, str]:
    return {
        "x-slm-router-expert": _header_safe(expert),
        "x-slm-router-domain": _header_safe(routed.plan.domain),
        "x-slm-router-reason": _header_safe(routed.plan.reason),
        "x-request-id": request_id,
    }


def sse(obj: Mapping[str, Any] | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


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
        experts: Mapping[str, Describable],
        accounting: Accounting | None = None,
    ) -> None:
        self.service = service
        self.experts = experts
        self.accounting = accounting or Accounting(service.config)
        self._infos: dict[str, ModelInfo] = {}
        self.started = time.time()

    @property
    def config(self) -> Any:
        return self.service.config

    # ---- chat ----------------------------------------------------------------------------
    async def chat(self, req: ChatCompletionRequest, headers: Mapping[str, str]) -> ChatResult:
        acct = self.accounting
        self.service.check(req)
        ticket = await acct.open(
            headers,
            request_id=uuid.uuid4().hex,
            model=req.model or "auto",
            stream=req.stream,
            prompt_chars=sum(len(m.text()) for m in req.messages),
            max_tokens=req.max_completion_tokens or req.max_tokens or 256,
        )
        with acct.current(ticket):
            return await self._chat(req, ticket)

    async def _chat(self, req: ChatCompletionRequest, ticket: Ticket) -> ChatResult:
        acct = self.accounting
        plan: RoutePlan | None = None
        try:
            routed = await self.service.route(
                req,
                request_id=ticket.request_id,
                team=ticket.key.team if ticket.key else None,
                key_id=ticket.key.key_id if ticket.key else None,
                budget_used_fraction=ticket.used_fraction,
                trace=acct,
            )
            plan = routed.plan
            acct.observe_route(ticket, routed)
            if req.stream:
                opened = await self.service.open_stream(req, plan, acct)
                ticket.mark_first_token()
                headers_out = routing_headers(routed, opened.expert, ticket.request_id)
                return ChatResult(200, headers_out, stream=self._sse(req, opened, ticket, plan))
            expert, completion, _ = await self.service.complete(req, plan, acct)
        except Exception as exc:
            status, _, _ = envelope(exc)
            where = plan.expert if plan else ""
            await acct.close(
                ticket, Outcome(where, plan.domain if plan else "", status=status, error=exc)
            )
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
        body = completion_body(new_id(), expert, completion)
        return ChatResult(200, routing_headers(routed, expert, ticket.request_id), body=body)

    async def _sse(
        self, req: ChatCompletionRequest, opened: OpenStream, ticket: Ticket, plan: RoutePlan
    ) -> AsyncIterator[bytes]:
        rid, created, model = new_id(), int(time.time()), opened.expert
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        prompt_tokens, completion_tokens = 0, 0
        outcome = Outcome(model, plan.domain, reason=plan.reason, status=499)
        try:
            yield sse(chunk_body(rid, model, created, {"role": "assistant", "content": ""}))
            last: StreamChunk = opened.first
            try:
                chunk: StreamChunk | None = opened.first
                while chunk is not None:
                    last = chunk
                    completion_tokens += 1 if chunk.text else 0
                    if chunk.text:
                        yield sse(chunk_body(rid, model, created, {"content": chunk.text}))
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
                yield sse(body)
                yield sse("[DONE]")
                return
            prompt_tokens = last.prompt_tokens or 0
            completion_tokens = (
                last.completion_tokens if last.completion_tokens is not None else completion_tokens
            )
            outcome = Outcome(
                model, plan.domain, prompt_tokens, completion_tokens, reason=plan.reason
            )
            yield sse(chunk_body(rid, model, created, {}, last.finish_reason or "stop"))
            if include_usage:
                yield sse(usage_chunk_body(rid, model, created, prompt_tokens, completion_tokens))
            yield sse("[DONE]")
        finally:
            # Also runs when the client disconnects (status 499): the record is never dropped.
            await self.accounting.close(ticket, outcome)

    # ---- dry run, models, health ---------------------------------------------------------
    async def route(self, req: ChatCompletionRequest) -> dict[str, Any]:
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
            },
        }

    async def _info(self, name: str) -> ModelInfo | None:
        if name not in self._infos:
            try:
                self._infos[name] = await asyncio.wait_for(self.experts[name].describe(), 10)
            except Exception:  # an expert still starting: list it without metadata
                return None
        return self._infos[name]

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
        infos = await asyncio.gather(*(self._info(n) for n in self.config.experts))
        for (name, spec), info in zip(self.config.experts.items(), infos, strict=True):
            meta: dict[str, Any] = {"backend": spec.backend, "description": spec.description}
            if info is not None:
                meta.update(model=info.model, context_window=info.context_window, **info.metadata)
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
                return bool(await asyncio.wait_for(self.experts[name].health(), 5))
            except Exception:
                return False

        names = list(self.config.experts)
        results = await asyncio.gather(*(one(n) for n in names))
        return dict(zip(names, results, strict=True))
