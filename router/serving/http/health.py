"""GET /healthz (liveness), GET /readyz (every expert answers its health check), GET /metrics.

With `gateway.auth` on, /metrics needs an admin key (it lists every team with its spend): point
the scraper at it with `authorization: Bearer <admin key>` (Prometheus: `authorization:
{credentials: ...}`). With auth off it is open, like every route.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from router.finance.access import admin
from router.serving.http.state import app_state

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    await admin(request)
    telemetry = app_state(request).telemetry
    if telemetry is None:
        return Response("", media_type="text/plain")
    body, content_type = telemetry.render_prometheus()
    return Response(body, media_type=content_type)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    experts = await app_state(request).gateway.ready()
    ok = all(experts.values())
    return JSONResponse({"ready": ok, "experts": experts}, status_code=200 if ok else 503)
