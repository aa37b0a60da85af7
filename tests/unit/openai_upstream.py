"""A small OpenAI-compatible chat server on a loopback port, for the remote clients' tests.

The request's `model` picks a behaviour (text, tool calls, JSON, logprobs, refusal, errors
before or in the middle of a stream, 429 with Retry-After); every request body is recorded.
The fixtures (`upstream`, `client`, `make`) reach test modules through tests/unit/conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from experts.registry import build_backend
from experts.spec import ExpertSpec
from experts.upstream import UpstreamBackend

REPLY_WORDS = ["hello", " from", " the", " loopback", " server"]
PROMPT_TOKENS = 11
TOOL_CALLS = [
    {"id": "call_a", "name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'},
    {"id": "call_b", "name": "get_time", "arguments": '{"tz": "Europe/Paris"}'},
]
JSON_REPLY = '{"answer": 42, "unit": "none"}'
LOGPROBS = [
    {
        "token": "hello",
        "logprob": -0.25,
        "bytes": [104, 101, 108, 108, 111],
        "top_logprobs": [
            {"token": "hello", "logprob": -0.25, "bytes": [104, 101, 108, 108, 111]},
            {"token": "hi", "logprob": -1.5, "bytes": [104, 105]},
        ],
    },
    {"token": " there", "logprob": -0.5, "bytes": None, "top_logprobs": []},
]
REFUSAL = "I can't help with that."


@dataclass
class Upstream:
    base_url: str
    seen: list[dict[str, Any]] = field(default_factory=list)
    # behaviour "busy-then-ok": how many 429s each `user` still gets before an answer
    busy_left: dict[str, int] = field(default_factory=dict)
    retry_after: str = "0.2"

    def last(self) -> dict[str, Any]:
        return dict(self.seen[-1]["body"])


def usage(completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": PROMPT_TOKENS + completion,
    }


def _completion_tokens(behaviour: str, body: dict[str, Any]) -> int:
    if behaviour in ("echo", "busy-then-ok", "slow"):
        return len(REPLY_WORDS[: body.get("max_tokens", 99)])
    return 5


def _error(message: str, kind: str, status: int, **headers: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status, headers=headers)


def _reply(behaviour: str, body: dict[str, Any]) -> dict[str, Any]:
    """The assistant message and finish reason for a behaviour (non-streamed shape)."""
    if behaviour == "tools":
        calls = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for c in TOOL_CALLS
        ]
        return {
            "message": {"role": "assistant", "content": None, "tool_calls": calls},
            "finish": "tool_calls",
        }
    if behaviour == "json":
        return {"message": {"role": "assistant", "content": JSON_REPLY}, "finish": "stop"}
    if behaviour == "refuse":
        return {
            "message": {"role": "assistant", "content": None, "refusal": REFUSAL},
            "finish": "stop",
        }
    words = REPLY_WORDS[: body.get("max_tokens", 99)]
    finish = "length" if len(words) < len(REPLY_WORDS) else "stop"
    return {"message": {"role": "assistant", "content": "".join(words)}, "finish": finish}


def make_app(up: Upstream) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        up.seen.append({"body": body, "auth": request.headers.get("authorization")})
        behaviour = body["model"].removeprefix("openai/")
        if behaviour == "boom":
            return _error("kaput", "server_error", 500)
        if behaviour == "busy":
            return _error("slow down", "rate_limit", 429)
        if behaviour == "busy-long":
            return _error("slow down", "rate_limit", 429, **{"Retry-After": "120"})
        if behaviour == "busy-then-ok":
            key = str(body.get("user"))
            if up.busy_left.get(key, 0) > 0:
                up.busy_left[key] -= 1
                return _error("slow down", "rate_limit", 429, **{"Retry-After": up.retry_after})
        if behaviour == "ctx":
            msg = "This model's maximum context length is 8 tokens, however you requested 99"
            error = {
                "message": msg,
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            }
            return JSONResponse({"error": error}, 400)
        if behaviour == "slow":
            await asyncio.sleep(3)
        if body.get("stream"):
            return StreamingResponse(sse(behaviour, body), media_type="text/event-stream")
        reply = _reply(behaviour, body)
        choice: dict[str, Any] = {
            "index": 0,
            "message": reply["message"],
            "finish_reason": reply["finish"],
        }
        if behaviour == "logprobs" and body.get("logprobs"):
            choice["logprobs"] = {"content": LOGPROBS, "refusal": None}
        return {
            "id": "cmpl-1",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": behaviour,
            "choices": [choice],
            "usage": usage(_completion_tokens(behaviour, body)),
        }

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Any:
        body = await request.json()
        up.seen.append({"body": body, "auth": request.headers.get("authorization")})
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        dims = body.get("dimensions") or 3
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(t))] + [0.5] * (dims - 1)}
            for i, t in enumerate(texts)
        ]
        tokens = sum(len(t.split()) for t in texts)
        return {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    return app


def _chunk(
    body: dict[str, Any], delta: dict[str, Any], finish: str | None = None, **extra: Any
) -> str:
    data = {
        "id": "cmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": body["model"],
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, **extra}],
    }
    return f"data: {json.dumps(data)}\n\n"


def _tool_deltas(body: dict[str, Any]) -> Iterator[str]:
    for index, call in enumerate(TOOL_CALLS):
        head = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": ""},
        }
        yield _chunk(body, {"tool_calls": [head]})
        args = call["arguments"]
        for piece in (args[: len(args) // 2], args[len(args) // 2 :]):
            yield _chunk(body, {"tool_calls": [{"index": index, "function": {"arguments": piece}}]})


def _error_event(message: str) -> str:
    return f"data: {json.dumps({'error': {'message': message, 'type': 'server_error'}})}\n\n"


async def sse(behaviour: str, body: dict[str, Any]) -> AsyncIterator[str]:
    yield _chunk(body, {"role": "assistant", "content": ""})
    if behaviour == "error-first":
        yield _error_event("model overloaded")
        return
    if behaviour in ("midstream-error", "cutoff"):
        yield _chunk(body, {"content": "Hel"})
        await asyncio.sleep(0.01)
        if behaviour == "cutoff":
            raise RuntimeError("connection dropped on purpose")
        yield _error_event("upstream died")
        yield "data: [DONE]\n\n"
        return
    reply = _reply(behaviour, body)
    if behaviour == "tools":
        for line in _tool_deltas(body):
            yield line
    elif behaviour == "refuse":
        yield _chunk(body, {"refusal": REFUSAL[:10]})
        yield _chunk(body, {"refusal": REFUSAL[10:]})
    elif behaviour == "logprobs":
        for entry in LOGPROBS:
            yield _chunk(
                body, {"content": entry["token"]}, logprobs={"content": [entry], "refusal": None}
            )
    else:
        text = reply["message"]["content"]
        pieces = (
            REPLY_WORDS[: body.get("max_tokens", 99)]
            if behaviour != "json"
            else [text[:9], text[9:]]
        )
        for piece in pieces:
            yield _chunk(body, {"content": piece})
    yield _chunk(body, {}, reply["finish"] if behaviour != "logprobs" else "stop")
    if (body.get("stream_options") or {}).get("include_usage"):
        data = {
            "id": "cmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": body["model"],
            "choices": [],
            "usage": usage(_completion_tokens(behaviour, body)),
        }
        yield f"data: {json.dumps(data)}\n\n"
    yield "data: [DONE]\n\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(app: Any, port: int | None = None) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a thread on a loopback port; yields its base URL."""
    import uvicorn

    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the loopback server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)


def serve_upstream() -> Iterator[Upstream]:
    """Start the server in a thread for the duration of a fixture."""
    port = free_port()
    up = Upstream(f"http://127.0.0.1:{port}/v1")
    with serving(make_app(up), port):
        yield up


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    yield from serve_upstream()


@pytest.fixture(params=["litellm", "httpx"])
def client(request: pytest.FixtureRequest) -> str:
    """Every test runs on litellm (the general path) and the direct httpx client."""
    return str(request.param)


Make = Callable[..., UpstreamBackend]


@pytest.fixture
def make(upstream: Upstream, client: str) -> Make:
    def build(behaviour: str = "echo", **kw: Any) -> UpstreamBackend:
        spec = ExpertSpec(
            backend="remote",
            model=f"openai/{behaviour}",
            api_base=upstream.base_url,
            client=client,
            **kw,
        )
        b = build_backend("remote-test", spec)
        assert isinstance(b, UpstreamBackend)
        assert b.info().metadata["client"] == client
        return b

    return build
