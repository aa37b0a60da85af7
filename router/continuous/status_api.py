"""GET /v1/router/status: the classifier live (kind, version, data hash), the rollout and its
shadow agreement, the drift window and its alerts, and the experts' versions.

Authenticated like the chat endpoint; `install(app, continuous)` mounts the module-level router
with the Continuous object it reports on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from router.continuous.metering import metered
from router.finance.access import NO_STORE

if TYPE_CHECKING:
    from router.continuous.live import Continuous

router = APIRouter()


def install(app: FastAPI, continuous: Continuous) -> None:
    app.state.continuous = continuous
    app.include_router(router)


@router.get("/v1/router/status", response_model=None)
async def status(request: Request) -> Response:
    await metered(request)
    continuous: Continuous = request.app.state.continuous
    return JSONResponse(continuous.status(), headers=NO_STORE)
