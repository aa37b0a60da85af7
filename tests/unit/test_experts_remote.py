"""RemoteBackend through real litellm against an OpenAI-compatible server started on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from experts.base import GenerationParams, Message
from experts.errors import (
    ContextWindowExceeded,
    ExpertOverloaded,
    ExpertTimeout,
    ExpertUnavailable,
)
from experts.registry import build_backend
from experts.remote import RemoteBackend
from experts.spec import ExpertSpec

USER = [Message("user", "say something nice")]
REPLY_WORDS = ["hello", " from", " the", " loopback", " server"]


def make_app(seen: list[dict[str, Any]]) -> Any:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        seen.append({"body": body, "auth": request.headers.get("authorization")})
        behaviour = body["model"]
        if behaviour == "boom":
            return JSONResponse({"error": {"message": "kaput", "type": "server_error"}}, 500)
        if behaviour == "busy":
            return JSONResponse({"error": {"message": "slow down", "type": "rate_limit"}}, 429)
        if behaviour == "ctx":
            msg = "This model's maximum context length is 8 tokens, however you requested 99"
            return JSONResponse(
                {
                    "error": {
                        "message": msg,
                        "type": "invalid_request_error",
                        "code": "context_length_exceeded",
                    }
                },
                400,
            )
        if behaviour == "slow":
            await asyncio.sleep(3)
        words = REPLY_WORDS[: body.get("max_tokens", 99)]
        finish = "length" if len(words) < len(REPLY_WORDS) else "stop"
        if body.get("stream"):
            return StreamingResponse(sse(words, finish, body), media_type="text/event-stream")
        return {
            "id": "cmpl-1",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": behaviour,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(words)},
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": 11,
                "completion_tokens": len(words),
                "total_tokens": 11 + len(words),
            },
        }

    return app


async def sse(words: list[str], finish: str, body: dict[str, Any]) -> AsyncIterator[str]:
    base = {"id": "cmpl-1", "object": "chat.completion.chunk", "created": 1, "model": body["model"]}
    for word in words:
        chunk = {
            **base,
            "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
        }
        yield f"data: {json.dumps(chunk)}\n\n"
    last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
    yield f"data: {json.dumps(last)}\n\n"
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {
            "prompt_tokens": 11,
            "completion_tokens": len(words),
            "total_tokens": 11 + len(words),
        }
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
    yield "data: [DONE]\n\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    import uvicorn

    seen: list[dict[str, Any]] = []
    port = free_port()
    config = uvicorn.Config(make_app(seen), host="127.0.0.1", port=port, log_level="error")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started
    yield f"http://127.0.0.1:{port}/v1", seen
    srv.should_exit = True
    thread.join(timeout=5)


@pytest.fixture(params=["litellm", "httpx"])
def client(request: pytest.FixtureRequest) -> str:
    """Every test runs on litellm (the general path) and the direct httpx client."""
    return str(request.param)


Make = Callable[..., RemoteBackend]


@pytest.fixture
def make(server: tuple[str, list[Any]], client: str) -> Make:
    def build(behaviour: str = "echo", **kw: Any) -> RemoteBackend:
        spec = ExpertSpec(
            backend="remote",
            model=f"openai/{behaviour}",
            api_base=server[0],
            client=client,
            **kw,
        )
        b = build_backend("remote-test", spec)
        assert isinstance(b, RemoteBackend)
        assert b.info().metadata["client"] == client
        return b

    return build


async def test_generate_returns_text_and_provider_usage(make: Make, server: Any) -> None:
    got = await make().generate(
        USER, GenerationParams(max_tokens=50, temperature=0.2, seed=4, stop=("zz",))
    )
    assert got.text == "".join(REPLY_WORDS)
    assert (got.prompt_tokens, got.completion_tokens, got.finish_reason) == (11, 5, "stop")
    sent = server[1][-1]["body"]
    assert sent["messages"] == [{"role": "user", "content": "say something nice"}]
    assert (sent["temperature"], sent["seed"], sent["stop"], sent["max_tokens"]) == (
        0.2,
        4,
        ["zz"],
        50,
    )


async def test_stream_passes_chunks_through(make: Make, server: Any) -> None:
    chunks = [c async for c in make().stream(USER, GenerationParams(max_tokens=3))]
    assert [c.text for c in chunks[:-1]] == REPLY_WORDS[:3]
    assert (chunks[-1].finish_reason, chunks[-1].prompt_tokens, chunks[-1].completion_tokens) == (
        "length",
        11,
        3,
    )


async def test_api_key_comes_from_the_named_env_var(
    make: Make, server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLM_TEST_REMOTE_KEY", "sk-secret-123")
    await make(api_key_env="SLM_TEST_REMOTE_KEY").generate(USER, GenerationParams())
    assert server[1][-1]["auth"] == "Bearer sk-secret-123"


async def test_missing_api_key_env_is_unavailable(
    make: Make, server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLM_TEST_MISSING_KEY", raising=False)
    with pytest.raises(ExpertUnavailable, match="SLM_TEST_MISSING_KEY"):
        await make(api_key_env="SLM_TEST_MISSING_KEY").generate(USER, GenerationParams())


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [("boom", ExpertUnavailable), ("busy", ExpertOverloaded), ("ctx", ContextWindowExceeded)],
)
async def test_upstream_errors_are_translated(
    make: Make, behaviour: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await make(behaviour).generate(USER, GenerationParams())


async def test_stream_errors_before_first_chunk_are_translated(make: Make, server: Any) -> None:
    with pytest.raises(ExpertUnavailable):
        async for _ in make("boom").stream(USER, GenerationParams()):
            pass


async def test_slow_upstream_times_out(make: Make, server: Any) -> None:
    started = time.monotonic()
    with pytest.raises(ExpertTimeout):
        await make("slow", timeout_s=0.5).generate(USER, GenerationParams())
    assert time.monotonic() - started < 2.5


async def test_retries_are_sent_again(make: Make, server: Any) -> None:
    before = len(server[1])
    with pytest.raises(ExpertUnavailable):
        await make("boom", retries=2).generate(USER, GenerationParams())
    assert len(server[1]) - before == 3


async def test_unreachable_server_is_unavailable(client: str) -> None:
    spec = ExpertSpec(
        backend="remote",
        client=client,
        model="openai/x",
        api_base=f"http://127.0.0.1:{free_port()}/v1",
        timeout_s=2,
    )
    with pytest.raises(ExpertUnavailable):
        await build_backend("down", spec).generate(USER, GenerationParams())


def test_info_and_counting(make: Make) -> None:
    b = make(context_window=4096)
    info = b.info()
    assert (info.backend, info.model, info.context_window) == ("remote", "openai/echo", 4096)
    assert b.count_prompt_tokens(USER) > 0
