"""Thin HTTP routes over the Gateway; every error leaves in OpenAI's envelope."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from experts.errors import ExpertError
from policies.errors import PolicyError
from router.config import PolicyLoadError
from router.errors import APIError, InvalidRequest, PayloadTooLarge, envelope
from router.finance.keys import AccessError, KeyInfo
from router.serving.gateway import Gateway
from router.serving.openai_types import ChatCompletionRequest

log = logging.getLogger("slm_router")
KNOWN_ERRORS: tuple[type[Exception], ...] = (
    APIError,
    ExpertError,
    PolicyError,
    AccessError,
    PolicyLoadError,
)


class _EscapingJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:  # a lone surrogate echoed in a message: escape, never fail
            return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode()


def error_response(exc: BaseException) -> JSONResponse:
    status, body, headers = envelope(exc)
    if status >= 500 and not hasattr(exc, "status_code"):
        log.error("unhandled error", exc_info=exc)
    return _EscapingJSON(body, status_code=status, headers=headers)


def _param(loc: tuple[Any, ...]) -> str:
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def validation_error(exc: RequestValidationError) -> InvalidRequest:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return InvalidRequest("request body is not valid JSON", code="invalid_json")
    param = _param(tuple(first.get("loc", ())))
    msg = str(first.get("msg", "invalid value"))
    if first.get("type") == "missing":
        msg = "field required"
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    return InvalidRequest(f"{param or 'body'}: {msg}{more}", param=param or None)


class BodyLimit:
    """Reject oversized bodies before they are buffered (header check, then a byte count)."""

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
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                # FastAPI turns anything else raised while it reads the body into a plain 400;
                # an HTTPException passes through to the handler below, which makes it a 413.
                raise StarletteHTTPException(413, self._too_large().message)
            return message

        await self.app(scope, counting_receive, send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body exceeds {self.max_bytes} bytes")


def create_api(gw: Gateway) -> FastAPI:
    cfg = gw.config
    app = FastAPI(title="slm-router", version="0.1.0", docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, max_bytes=cfg.gateway.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 413:
            return error_response(PayloadTooLarge(str(exc.detail)))
        etype = "invalid_request_error" if exc.status_code < 500 else "server_error"
        body = {"error": {"message": str(exc.detail), "type": etype, "param": None, "code": None}}
        return JSONResponse(body, status_code=exc.status_code)

    async def _known(_: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    # Every error tree of the project carries its status; handled here, they never reach the
    # server-error middleware (which would log a traceback for a plain 401).
    for known in KNOWN_ERRORS:
        app.add_exception_handler(known, _known)

    @app.exception_handler(Exception)
    async def _any(_: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatCompletionRequest, request: Request) -> Response:
        if len(body.messages) > cfg.gateway.max_messages:
            raise InvalidRequest(f"at most {cfg.gateway.max_messages} messages", param="messages")
        try:
            _check_text(body)
            result = await gw.chat(body, request.headers)
        except Exception as exc:  # routed to the envelope here, not re-raised into the server log
            return error_response(exc)
        if result.stream is not None:
            headers = {**result.headers, "cache-control": "no-cache"}
            return StreamingResponse(result.stream, media_type="text/event-stream", headers=headers)
        return JSONResponse(result.body, headers=result.headers)

    @app.post("/v1/route", response_model=None)
    async def route(body: ChatCompletionRequest, request: Request) -> Response:
        try:
            await gw.accounting.authenticate(request.headers.get("authorization"))
            _check_text(body)
            return JSONResponse(await gw.route(body))
        except Exception as exc:
            return error_response(exc)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        await gw.accounting.authenticate(request.headers.get("authorization"))
        return await gw.models()

    @app.get("/metrics")
    async def metrics() -> Response:
        telemetry = gw.accounting.telemetry
        if telemetry is None:
            return Response("", media_type="text/plain")
        body, content_type = telemetry.render_prometheus()
        return Response(body, media_type=content_type)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        experts = await gw.ready()
        ok = all(experts.values())
        return JSONResponse({"ready": ok, "experts": experts}, status_code=200 if ok else 503)

    _add_spend(app, gw)
    _add_continuous(app, gw)
    return app


def _add_continuous(app: FastAPI, gw: Gateway) -> None:
    cont = gw.service.continuous
    if cont is None:
        return
    from router.continuous.feedback_api import add_feedback_routes
    from router.continuous.live import add_status_route

    async def authenticate(request: Request) -> KeyInfo | None:
        return await gw.accounting.authenticate(request.headers.get("authorization"))

    async def status() -> dict[str, Any]:
        return cont.status()

    add_status_route(app, status, authenticate)
    if cont.feedback is not None:
        cfg = gw.config
        domains = {r.domain for r in cfg.routing.routes} | {"out_of_scope"}
        add_feedback_routes(
            app, cont.feedback, authenticate, domains=domains, experts=set(cfg.experts)
        )


def _add_spend(app: FastAPI, gw: Gateway) -> None:
    acct = gw.accounting
    if acct.ledger is None:
        return
    from router.finance.spend_api import add_spend_routes

    async def require_admin(request: Request) -> None:
        await acct.authenticate(request.headers.get("authorization"), admin=True)

    add_spend_routes(app, acct.ledger, acct.keys, acct.limiter, require_admin)


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


def _check_text(body: ChatCompletionRequest) -> None:
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
