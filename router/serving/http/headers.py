"""The one place response header values are made safe: printable ASCII, one line, bounded.

A header value that carries a control character (a client's model name echoed in
`x-slm-router-reason`) makes uvicorn refuse the whole answer after the request was processed.
`clean` is for code that builds a header from text; `SafeHeaders` rewrites every header of every
answer on its way out, so a header set anywhere (routes, error envelopes, middlewares) is safe.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_HEADER = 256
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_UNPRINTABLE_B = re.compile(rb"[^\x20-\x7e]")


def clean(text: str, limit: int = MAX_HEADER) -> str:
    """Printable ASCII only (anything else becomes '?'), whitespace runs folded, `limit` chars."""
    folded = " ".join(text.split())
    return _UNPRINTABLE.sub("?", folded)[:limit]


def clean_bytes(value: bytes, limit: int = MAX_HEADER) -> bytes:
    return _UNPRINTABLE_B.sub(b"?", value).strip()[:limit]


class SafeHeaders:
    """Every response header value through `clean_bytes` (names are ours, so left alone), and
    the headers in `drop` removed: behind Serve's proxy, which appends its own x-request-id (the
    same id: the gateway takes the one the proxy puts on the request), ours would be a second."""

    def __init__(
        self, app: ASGIApp, limit: int = MAX_HEADER, drop: frozenset[bytes] = frozenset()
    ) -> None:
        self.app = app
        self.limit = limit
        self.drop = drop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def safe_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    (k, clean_bytes(v, self.limit))
                    for k, v in message.get("headers", ())
                    if k.lower() not in self.drop
                ]
            await send(message)

        await self.app(scope, receive, safe_send)
