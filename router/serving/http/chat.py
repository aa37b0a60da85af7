"""POST /v1/chat/completions (routed or pinned; JSON or SSE) and POST /v1/route (the dry run)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from router.config import AppConfig
from router.errors import InvalidRequest
from router.finance.access import caller
from router.serving.http.state import app_state
from router.serving.openai_types import ChatCompletionRequest

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None)
async def chat(body: ChatCompletionRequest, request: Request) -> Response:
    gw = app_state(request).gateway
    _check_size(body, gw.config)
    check_text(body)
    result = await gw.chat(body, request.headers)
    if result.stream is not None:
        headers = {**result.headers, "cache-control": "no-cache"}
        return StreamingResponse(result.stream, media_type="text/event-stream", headers=headers)
    return JSONResponse(result.body, headers=result.headers)


@router.post("/v1/route", response_model=None)
async def route(body: ChatCompletionRequest, request: Request) -> Response:
    await caller(request)
    check_text(body)
    return JSONResponse(await app_state(request).gateway.route(body))


def _check_size(body: ChatCompletionRequest, config: AppConfig) -> None:
    limit = config.gateway.max_messages
    if len(body.messages) > limit:
        raise InvalidRequest(f"at most {limit} messages", param="messages")


def _check_unicode(value: str | None, param: str) -> None:
    # JSON's \ud800 escapes parse into lone surrogates, which no encoder downstream (UTF-8
    # responses, tokenizers, HTTP clients to remote experts) accepts: refuse them here.
    if value is not None and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest(
                f"{param}: contains a lone UTF-16 surrogate (not valid Unicode)", param=param
            ) from None


def check_text(body: ChatCompletionRequest) -> None:
    _check_unicode(body.model, "model")
    _check_unicode(body.user, "user")
    for stop in body.stop_tuple():
        _check_unicode(stop, "stop")
    for i, m in enumerate(body.messages):
        try:
            text = m.text()
        except ValueError as exc:
            raise InvalidRequest(str(exc), param=f"messages[{i}].content") from None
        _check_unicode(text, f"messages[{i}].content")
    if not any(m.role == "user" and m.text().strip() for m in body.messages):
        raise InvalidRequest("messages need at least one non-empty user message", param="messages")
