"""GET /v1/models: `auto` plus every expert, with backend, model, context window and metadata."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from router.continuous.metering import metered
from router.serving.http.state import app_state

router = APIRouter()


@router.get("/v1/models")
async def models(request: Request) -> dict[str, Any]:
    await metered(request)
    return await app_state(request).gateway.models()
