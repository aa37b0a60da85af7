"""POST /v1/feedback (and GET /v1/feedback/{request_id}): thin routes over the FeedbackStore.

Authenticated like the chat endpoint (router.finance.access.caller: the KeyInfo, or None when
auth is off); private, so no cache keeps an answer or an error. `install(app, store, ...)`
mounts the module-level router with the store it writes to.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from router.continuous.feedback import FeedbackIn, FeedbackRecord, FeedbackStore, clean_request_id
from router.continuous.metering import metered
from router.errors import InvalidRequest, NotFound
from router.finance.access import NO_STORE, private

MAX_BODY = 64_000
router = APIRouter(dependencies=[Depends(private)])


@dataclass(frozen=True)
class _Desk:
    store: FeedbackStore
    domains: Collection[str] | None
    experts: Collection[str] | None


def install(
    app: FastAPI,
    store: FeedbackStore,
    *,
    domains: Collection[str] | None = None,
    experts: Collection[str] | None = None,
) -> None:
    """Mount the feedback routes on `app`, writing to `store`.

    `domains`/`experts`, when given, are the names a correction may use (the policy's route
    domains plus the OOS label; its experts): a typo gets a 400 with a suggestion.
    """
    app.state.feedback = _Desk(store, domains, experts)
    app.include_router(router)


def _desk(request: Request) -> _Desk:
    desk: _Desk = request.app.state.feedback
    return desk


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


@router.post("/v1/feedback")
async def post_feedback(request: Request) -> Response:
    key = await metered(request)
    fb = await _body(request)
    desk = _desk(request)
    rec = await desk.store.submit(fb, key, domains=desk.domains, experts=desk.experts)
    return JSONResponse(feedback_json(rec), headers=NO_STORE)


@router.get("/v1/feedback/{request_id}")
async def get_feedback(request_id: str, request: Request) -> Response:
    key = await metered(request)
    rid = clean_request_id(request_id)
    if rid is None:
        raise InvalidRequest(
            "request_id: not a request id (letters, digits, '_', '.', '-'; at most 128)",
            param="request_id",
        )
    rec = await _desk(request).store.get(rid)
    if rec is None or (key is not None and not key.admin and rec.team != key.team):
        raise NotFound(f"no feedback for request {request_id!r}", param="request_id")
    return JSONResponse(feedback_json(rec), headers=NO_STORE)
