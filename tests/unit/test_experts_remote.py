"""Both remote clients (litellm and the direct httpx one) against a real OpenAI-compatible
server on loopback: plain text, usage, keys, error translation, timeouts, retries."""

from __future__ import annotations

import time

import pytest

from experts.base import GenerationParams, Message
from experts.errors import (
    ContextWindowExceeded,
    ExpertOverloaded,
    ExpertTimeout,
    ExpertUnavailable,
)
from experts.registry import build_backend
from experts.spec import ExpertSpec
from experts.upstream import RETRY_CAP_S, backoff_s, parse_retry_after
from tests.unit.openai_upstream import REPLY_WORDS, Make, Upstream, free_port

USER = [Message("user", "say something nice")]


async def test_generate_returns_text_and_provider_usage(make: Make, upstream: Upstream) -> None:
    got = await make().generate(
        USER, GenerationParams(max_tokens=50, temperature=0.2, seed=4, stop=("zz",))
    )
    assert got.text == "".join(REPLY_WORDS)
    assert (got.prompt_tokens, got.completion_tokens, got.finish_reason) == (11, 5, "stop")
    sent = upstream.last()
    assert sent["messages"] == [{"role": "user", "content": "say something nice"}]
    assert (sent["temperature"], sent["seed"], sent["stop"], sent["max_tokens"]) == (
        0.2,
        4,
        ["zz"],
        50,
    )


async def test_stream_passes_chunks_through(make: Make, upstream: Upstream) -> None:
    chunks = [c async for c in make().stream(USER, GenerationParams(max_tokens=3))]
    assert [c.text for c in chunks[:-1]] == REPLY_WORDS[:3]
    assert (chunks[-1].finish_reason, chunks[-1].prompt_tokens, chunks[-1].completion_tokens) == (
        "length",
        11,
        3,
    )


async def test_api_key_comes_from_the_named_env_var(
    make: Make, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLM_TEST_REMOTE_KEY", "sk-secret-123")
    await make(api_key_env="SLM_TEST_REMOTE_KEY").generate(USER, GenerationParams())
    assert upstream.seen[-1]["auth"] == "Bearer sk-secret-123"


async def test_missing_api_key_env_is_unavailable(
    make: Make, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
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


async def test_stream_errors_before_first_chunk_are_translated(
    make: Make, upstream: Upstream
) -> None:
    with pytest.raises(ExpertUnavailable):
        async for _ in make("boom").stream(USER, GenerationParams()):
            pass


async def test_slow_upstream_times_out(make: Make, upstream: Upstream) -> None:
    started = time.monotonic()
    with pytest.raises(ExpertTimeout):
        await make("slow", timeout_s=0.5).generate(USER, GenerationParams())
    assert time.monotonic() - started < 2.5


async def test_retries_are_sent_again(make: Make, upstream: Upstream) -> None:
    before = len(upstream.seen)
    with pytest.raises(ExpertUnavailable):
        await make("boom", retries=2).generate(USER, GenerationParams())
    assert len(upstream.seen) - before == 3


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


# -- retry timing (pure functions: the random part is passed in) ------------------------------


@pytest.mark.parametrize("rand", [0.0, 0.5, 1.0])
def test_retry_after_is_waited_at_least_and_spread_by_jitter(rand: float) -> None:
    wait = backoff_s(0, 2.0, rand=lambda: rand)
    assert wait == pytest.approx(2.0 + rand * 0.2)  # never earlier, at most 10% later


def test_backoff_without_retry_after_is_jittered_exponential_and_capped() -> None:
    lows = [backoff_s(a, None, rand=lambda: 0.0) for a in range(8)]
    highs = [backoff_s(a, None, rand=lambda: 1.0) for a in range(8)]
    assert lows[:3] == pytest.approx([0.05, 0.1, 0.2])
    assert highs[:3] == pytest.approx([0.1, 0.2, 0.4])
    assert max(h for h in highs if h is not None) == RETRY_CAP_S


def test_retry_after_beyond_the_cap_gives_up() -> None:
    assert backoff_s(0, RETRY_CAP_S + 1) is None


def test_retry_after_headers_are_parsed() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    date = "Wed, 21 Oct 2015 07:28:10 GMT"
    assert parse_retry_after({"Retry-After": date}, now=1445412480.0) == pytest.approx(10.0)
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after(None) is None
