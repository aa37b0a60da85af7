"""POST /v1/feedback (and GET /v1/feedback/{request_id}): thin routes over the FeedbackStore.

Authenticated like the chat endpoint, through the `authenticate(request)` the caller passes
(it returns the KeyInfo, or None when auth is off, and raises a 401/403 AccessError). Every
error leaves in OpenAI's envelope, whatever exception handlers the app has.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from router.continuous.feedback import FeedbackIn, FeedbackRecord, FeedbackStore
from router.errors import InvalidRequest, NotFound, envelope

if TYPE_CHECKING:
    from router.finance.keys import KeyInfo

log = logging.getLogger("slm_router")
Authenticate = Callable[[Request], Awaitable["KeyInfo | None"]]
MAX_BODY = 64_000
NO_STORE = {"cache-control": "no-store"}


def _error(exc: BaseException) -> JSONResponse:
    status, body, headers = envelope(exc)
    if status >= 500:
        log.error("feedback API error", exc_info=exc)
    return JSONResponse(body, status_code=status, headers={**headers, **NO_STORE})


def _invalid(exc: ValidationError) -> InvalidRequest:
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first.get("loc", ())) or None
    msg = "field required" if first.get("type") == "missing" else str(first.get("msg"))
    return InvalidRequest(f"{param or 'body'}: {msg}", param=param)


async def _body(request: Request) -> FeedbackIn:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise InvalidRequest(f"feedback body over {MAX_BODY} bytes", code="payload_too_large")
    try:
        data: Any = json.loads(raw or b"null")
    except ValueError:
        raise InvalidRequest("request body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    try:
        return FeedbackIn.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc) from None


def feedback_json(rec: FeedbackRecord) -> dict[str, Any]:
    label, source = rec.label
    return {
        "object": "feedback",
        "request_id": rec.request_id,
        "rating": rec.rating,
        "correct_domain": rec.correct_domain,
        "correct_expert": rec.correct_expert,
        "note": rec.note or None,
        "routed": {
            "domain": rec.routed_domain,
            "expert": rec.routed_expert,
            "reason": rec.route_reason,
        },
        "label": label,
        "label_source": source,
        "has_text": bool(rec.text),
        "created": rec.ts,
    }


def add_feedback_routes(
    app: FastAPI,
    store: FeedbackStore,
    authenticate: Authenticate,
    *,
    domains: Collection[str] | None = None,
    experts: Collection[str] | None = None,
) -> None:
    """Mount POST /v1/feedback and GET /v1/feedback/{request_id} on `app`.

    `domains`/`experts`, when given, are the names a correction may use (the policy's route
    domains plus the OOS label; its experts): a typo gets a 400 with a suggestion.
    """

    async def post_feedback(request: Request) -> Response:
        try:
            key = await authenticate(request)
            fb = await _body(request)
            rec = await store.submit(fb, key, domains=domains, experts=experts)
            return JSONResponse(feedback_json(rec), headers=NO_STORE)
        except Exception as exc:
            return _error(exc)

    async def get_feedback(request: Request) -> Response:
        try:
            key = await authenticate(request)
            rid = request.path_params["request_id"]
            rec = await store.get(rid)
            if rec is None or (key is not None and not key.admin and rec.team != key.team):
                raise NotFound(f"no feedback for request {rid!r}", param="request_id")
            return JSONResponse(feedback_json(rec), headers=NO_STORE)
        except Exception as exc:
            return _error(exc)

    app.add_api_route("/v1/feedback", post_feedback, methods=["POST"])
    app.add_api_route("/v1/feedback/{request_id}", get_feedback, methods=["GET"])
