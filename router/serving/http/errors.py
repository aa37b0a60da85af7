"""The one place errors become HTTP answers: OpenAI's envelope, with the right status.

Routes and the code below them raise (router.errors, or a leaf package's error carrying
`status_code` and `error_type`); the handlers installed here render. FastAPI's own errors
(validation, unknown paths, wrong methods) are translated into the same envelope, and anything
unexpected becomes a 500 envelope, logged once with its traceback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from experts.errors import ExpertError
from policies.errors import PolicyError
from router.errors import APIError, InvalidRequest, PayloadTooLarge, envelope
from router.finance.access import NO_STORE, is_private

log = logging.getLogger("slm_router")
# Every error tree of the project carries its status. Handled by FastAPI's exception middleware,
# they never reach Starlette's server-error middleware (which would log a traceback for a 401).
KNOWN_ERRORS: tuple[type[Exception], ...] = (APIError, ExpertError, PolicyError)


class _EscapingJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:  # a lone surrogate echoed in a message: escape, never fail
            return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode()


def error_response(exc: BaseException, scope: Scope | None = None) -> JSONResponse:
    status, body, headers = envelope(exc)
    if status >= 500 and not hasattr(exc, "status_code"):
        log.error("unhandled error", exc_info=exc)
    if scope is not None and is_private(scope):
        headers |= NO_STORE
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


class Refused(StarletteHTTPException):
    """An APIError raised while FastAPI reads the body (which would turn any other exception
    into a plain 400): carried through to `_http`, rendered as itself."""

    def __init__(self, error: APIError) -> None:
        super().__init__(error.status_code, error.message)
        self.error = error


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(validation_error(exc), request.scope)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc, Refused):
        return error_response(exc.error, request.scope)
    if exc.status_code == 413:
        return error_response(PayloadTooLarge(str(exc.detail)), request.scope)
    etype = "invalid_request_error" if exc.status_code < 500 else "server_error"
    body = {"error": {"message": str(exc.detail), "type": etype, "param": None, "code": None}}
    return JSONResponse(body, status_code=exc.status_code)


async def _known(request: Request, exc: Exception) -> JSONResponse:
    return error_response(exc, request.scope)


class Unhandled:
    """Anything no handler above took becomes a 500 envelope here, before Starlette's
    server-error middleware would answer in plain text and log it a second time. An error after
    the answer started (a broken stream) can only propagate."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})  # shared with every inner copy of the scope
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            await error_response(exc, scope)(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    for known in KNOWN_ERRORS:
        app.add_exception_handler(known, _known)
    app.add_middleware(Unhandled)
