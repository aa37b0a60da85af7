"""POST /v1/responses: the Responses API on the chat path (same routing, experts, ledger)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from router.errors import NotFound
from router.serving.http.chat import check_request, check_size, respond
from router.serving.http.state import app_state
from router.serving.responses_render import ResponsesRender
from router.serving.responses_types import ResponsesRequest

router = APIRouter()


@router.post("/v1/responses", response_model=None)
async def responses(body: ResponsesRequest, request: Request) -> Response:
    gw = app_state(request).gateway
    chat = body.to_chat()
    check_size(chat, gw.config)
    check_request(chat)
    return respond(await gw.chat(chat, request.headers, ResponsesRender(body)))


@router.get("/v1/responses/{response_id}", response_model=None)
async def stored_response(response_id: str) -> Response:
    raise NotFound(
        f"No response '{response_id}': slm-router stores no responses (every answer has "
        "`store: false`); keep the output on the client.",
        code="response_not_stored",
    )
