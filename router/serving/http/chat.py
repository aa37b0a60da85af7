"""POST /v1/chat/completions (routed or pinned; JSON or SSE) and POST /v1/route (the dry run)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from router.config import AppConfig
from router.continuous.metering import metered
from router.errors import InvalidRequest
from router.serving.gateway import ChatResult
from router.serving.http.state import app_state
from router.serving.openai_types import ChatCompletionRequest

router = APIRouter()

# OpenAI fields that change the answer and that no expert here honours: refused with a 400 that
# says so, never dropped in silence. A neutral value (null, {}, ["text"]) is accepted.
UNSUPPORTED = {
    "logit_bias": "logit_bias is not supported (each expert has its own tokenizer)",
    "audio": "audio output is not supported",
    "modalities": "only the text modality is supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "functions": "the legacy `functions` field is not supported: send `tools`",
    "function_call": "the legacy `function_call` field is not supported: send `tool_choice`",
}
NEUTRAL: tuple[Any, ...] = (None, {}, [], ["text"])


@router.post("/v1/chat/completions", response_model=None)
async def chat(body: ChatCompletionRequest, request: Request) -> Response:
    gw = app_state(request).gateway
    check_size(body, gw.config)
    check_request(body)
    return respond(await gw.chat(body, request.headers))


@router.post("/v1/route", response_model=None)
async def route(body: ChatCompletionRequest, request: Request) -> Response:
    await metered(request)
    check_request(body)
    return JSONResponse(await app_state(request).gateway.route(body))


def respond(result: ChatResult) -> Response:
    if result.stream is not None:
        headers = {**result.headers, "cache-control": "no-cache"}
        return StreamingResponse(result.stream, media_type="text/event-stream", headers=headers)
    return JSONResponse(result.body, headers=result.headers)


def check_size(body: ChatCompletionRequest, config: AppConfig) -> None:
    limit = config.gateway.max_messages
    if len(body.messages) > limit:
        raise InvalidRequest(f"at most {limit} messages", param="messages")


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string in a JSON value (keys included), with where it is."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k, path)
            yield from _strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")


def check_unicode(value: Any, param: str = "") -> None:
    # JSON's \ud800 escapes parse into lone surrogates, which no encoder downstream (UTF-8
    # responses, tokenizers, HTTP clients to remote experts) accepts: refuse them here.
    for where, text in _strings(value, param):
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidRequest(
                    f"{where or 'body'}: contains a lone UTF-16 surrogate (not valid Unicode)",
                    param=where or None,
                ) from None


def check_unsupported(extra: dict[str, Any] | None) -> None:
    for name, why in UNSUPPORTED.items():
        if extra and name in extra and extra[name] not in NEUTRAL:
            raise InvalidRequest(why, param=name, code="unsupported_parameter")


def check_request(body: ChatCompletionRequest) -> None:
    check_unsupported(body.model_extra)
    body.check_consistent()
    check_unicode(body.model_dump(exclude_none=True, by_alias=True))
    if not any(m.role == "user" and m.has_content() for m in body.messages):
        raise InvalidRequest("messages need at least one non-empty user message", param="messages")
