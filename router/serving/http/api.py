"""The FastAPI app of one ingress replica: every router mounted, errors rendered in one place."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router.continuous import feedback_api, status_api
from router.errors import InvalidRequest, PayloadTooLarge
from router.finance import access, spend_api
from router.serving.http import chat, embeddings, health, models, responses
from router.serving.http.errors import Refused, error_response, install_error_handlers
from router.serving.http.headers import SafeHeaders
from router.serving.http.limits import check_depth
from router.serving.http.state import AppState

DEFAULT_MAX_BODY = 2_000_000


class BodyLimit:
    """Reject oversized bodies before they are buffered (header check, then a byte count), and
    bodies nested too deep before any JSON parser sees them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(self._too_large())(scope, receive, send)
            return
        seen: list[bytes] = []

        async def counting_receive() -> Message:
            message = await receive()
            seen.append(message.get("body", b""))
            if sum(map(len, seen)) > self.max_bytes:
                # FastAPI turns anything else raised while it reads the body into a plain 400;
                # an HTTPException passes through to its handler, which makes it a 413.
                raise StarletteHTTPException(413, self._too_large().message)
            if message["type"] == "http.request" and not message.get("more_body", False):
                try:
                    check_depth(b"".join(seen))
                except InvalidRequest as exc:
                    raise Refused(exc) from None
            return message

        await self.app(scope, counting_receive, send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body exceeds {self.max_bytes} bytes")


def new_app(max_body_bytes: int = DEFAULT_MAX_BODY, behind_serve: bool = False) -> FastAPI:
    """An app with the gateway's error handling and body limit, and no routes yet.

    `behind_serve`: Serve's proxy answers with the x-request-id it put on the request (the
    client's, or one it made), which is the id the gateway uses; the app then sets none itself,
    so each answer has exactly one."""
    app = FastAPI(title="slm-router", version="0.1.0", docs_url=None, redoc_url=None)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    drop = frozenset({b"x-request-id"}) if behind_serve else frozenset()
    app.add_middleware(
        SafeHeaders, drop=drop
    )  # outermost: every header of every answer, errors included
    return app


def create_api(state: AppState, behind_serve: bool = False) -> FastAPI:
    config = state.gateway.config
    app = new_app(config.gateway.max_body_bytes, behind_serve)
    app.state.slm_router = state
    access.install(app, state.access)
    app.state.limiter = state.gateway.accounting.limiter  # for continuous.metering
    for router in (chat.router, responses.router, embeddings.router, models.router, health.router):
        app.include_router(router)
    if state.spend is not None:
        spend_api.install(app, state.spend)
    if state.continuous is not None:
        status_api.install(app, state.continuous)
    if state.feedback is not None:
        domains = {r.domain for r in config.routing.routes} | {"out_of_scope"}
        feedback_api.install(app, state.feedback, domains=domains, experts=set(config.experts))
    return app
