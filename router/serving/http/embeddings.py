"""POST /v1/embeddings (routed to embedding experts); the legacy /v1/completions, refused."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from router.errors import NotFound
from router.serving.http.chat import check_unicode, respond
from router.serving.http.state import app_state
from router.serving.openai_embeddings import EmbeddingsRequest

router = APIRouter()


@router.post("/v1/embeddings", response_model=None)
async def embeddings(body: EmbeddingsRequest, request: Request) -> Response:
    check_unicode(body.model_dump(exclude_none=True))
    return respond(await app_state(request).gateway.embeddings(body, request.headers))


@router.post("/v1/completions", response_model=None)
async def completions() -> Response:
    # The legacy text-completion API continues a raw prompt; chat experts answer messages, and
    # wrapping a prompt as a user turn would quietly change what the client asked for.
    raise NotFound(
        "POST /v1/completions (the legacy text-completion API) is not served by slm-router: "
        "its experts are chat models. Send the prompt as a user message to "
        "/v1/chat/completions, or use /v1/responses.",
        code="unsupported_endpoint",
    )
