"""An OpenAI-compatible backend that answers instantly: the floor for the overhead benchmark.

A raw asyncio HTTP/1.1 server (keep-alive, Content-Length bodies) rather than an ASGI stack, so
that what the benchmark measures is the gateway in front of it, not the backend.
Run: `python -m loadtest.backend --port 0` prints `READY <port>` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

REPLY = "ok"
COMPLETION_TOKENS = 1
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large"}
_MAX_BODY = 1 << 20


def _prompt_tokens(body: dict[str, Any]) -> int:
    """A cheap stand-in for a tokenizer: whitespace-separated words of every message."""
    words = 0
    for msg in body.get("messages") or ():
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, str):
            words += len(content.split())
    return max(words, 1)


def completion(body: dict[str, Any]) -> dict[str, Any]:
    p = _prompt_tokens(body)
    return {
        "id": "chatcmpl-instant",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model") or "instant"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": REPLY},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": p,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": p + COMPLETION_TOKENS,
        },
    }


def stream_body(body: dict[str, Any]) -> bytes:
    """The whole SSE stream at once: role chunk, content chunk, finish (+ usage), [DONE]."""
    base = {
        "id": "chatcmpl-instant",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
    }
    base["model"] = str(body.get("model") or "instant")

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    events = [chunk({"role": "assistant", "content": ""}, None), chunk({"content": REPLY}, None)]
    events.append(chunk({}, "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = completion(body)["usage"]
        events.append({**base, "choices": [], "usage": usage})
    text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return text.encode()


def _response(status: int, payload: bytes, content_type: str) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"content-type: {content_type}\r\ncontent-length: {len(payload)}\r\n"
        "connection: keep-alive\r\n\r\n"
    )
    return head.encode() + payload


def route(method: str, path: str, raw: bytes) -> bytes:
    """One request in, one full HTTP response out (pure; the server only moves bytes)."""
    path = path.split("?", 1)[0]
    if method == "GET" and path in ("/health", "/v1/health"):
        return _response(200, b'{"status":"ok"}', "application/json")
    if method == "GET" and path == "/v1/models":
        data = {"object": "list", "data": [{"id": "instant", "object": "model"}]}
        return _response(200, json.dumps(data).encode(), "application/json")
    if method != "POST" or path not in ("/v1/chat/completions", "/chat/completions"):
        return _response(
            404, b'{"error":{"message":"not found","type":"not_found"}}', "application/json"
        )
    try:
        body = json.loads(raw or b"{}")
        if not isinstance(body, dict):
            raise ValueError("body must be an object")
    except ValueError:
        err = b'{"error":{"message":"invalid JSON","type":"invalid_request_error"}}'
        return _response(400, err, "application/json")
    if body.get("stream"):
        return _response(200, stream_body(body), "text/event-stream")
    return _response(200, json.dumps(completion(body)).encode(), "application/json")


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length > _MAX_BODY:
                writer.write(_response(413, b"{}", "application/json"))
                break
            raw = await reader.readexactly(length) if length else b""
            writer.write(route(method, path, raw))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
        pass  # the client went away or spoke something else: just close
    finally:
        writer.close()


async def serve(host: str, port: int, ready: asyncio.Future[int] | None = None) -> None:
    server = await asyncio.start_server(_handle, host, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    if ready is not None:
        ready.set_result(bound)
    else:
        print(f"READY {bound}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadtest.backend", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    from loadtest.cli import run_async

    with contextlib.suppress(KeyboardInterrupt):
        run_async(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
