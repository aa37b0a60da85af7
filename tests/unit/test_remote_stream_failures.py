"""A remote expert's stream that fails upstream, through the real gateway (loopback fake upstream,
real Redis ledger), for both remote clients (litellm and httpx): after the first token the client's
stream ends with an error event (the stock openai sdk raises), never a normal finish, and the
ledger records an error, not a completion; before the first token the router still falls back to
the next expert of the route."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.unit.gateway_loopback import ledger_record
from tests.unit.openai_upstream import Upstream, serving

CLIENTS = ("litellm", "httpx")
# One exact example per fallback route: the request sends the same text, so it lands there.
FALLBACK_PROMPT = {
    "litellm": "compose a haiku about the ocean tides in winter",
    "httpx": "list three facts about volcanoes on the moon",
}


def _policy(url: str) -> str:
    experts = ["  small: {backend: fake}"]
    routes = []
    for client in CLIENTS:
        for behaviour in ("midstream-error", "cutoff", "error-first"):
            experts.append(
                f"  {behaviour}-{client}: {{backend: remote, model: openai/{behaviour},"
                f" api_base: {url}, client: {client},"
                " price: {input_per_1m: 1.0, output_per_1m: 2.0}}"
            )
        routes.append(
            f"    - {{domain: fb-{client}, experts: [error-first-{client}, small],"
            f" examples: [{FALLBACK_PROMPT[client]}]}}"
        )
    return "\n".join(
        [
            "version: 1",
            "classifier: {kind: examples}",
            "experts:",
            *experts,
            "routing:",
            "  fallback: small",
            "  routes:",
            *routes,
            "",
        ]
    )


@pytest.fixture(scope="module")
def gateway(upstream: Upstream, redis_server: Any) -> Iterator[str]:
    from router.config import parse_policy
    from router.serving.http.api import create_api
    from router.serving.wiring import build_state

    config = parse_policy(_policy(upstream.base_url), "stream-failures.yaml")
    with serving(create_api(build_state(config, None, {}, redis_server.url))) as url:
        yield url


def _stream(gateway: str, model: str, prompt: str = "say hello") -> tuple[httpx.Headers, list[Any]]:
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": prompt}]}
    with httpx.stream("POST", f"{gateway}/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200  # the headers went out with the first token
        events = [
            line[6:] if line[6:] == "[DONE]" else json.loads(line[6:])
            for line in r.iter_lines()
            if line.startswith("data: ")
        ]
    return r.headers, events


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("behaviour", ["midstream-error", "cutoff"])
def test_a_stream_that_fails_after_the_first_token_ends_with_an_error_and_is_not_billed(
    gateway: str, redis_server: Any, client: str, behaviour: str
) -> None:
    headers, events = _stream(gateway, f"{behaviour}-{client}")
    chunks = [e for e in events if isinstance(e, dict) and "choices" in e]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Hel"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)  # no normal finish
    error = next(e for e in events if isinstance(e, dict) and "error" in e)
    assert error["error"]["type"] == "upstream_error"
    assert events.index(error) == len(events) - 2 and events[-1] == "[DONE]"
    record = ledger_record(redis_server.url, headers["x-request-id"])
    assert record.expert == f"{behaviour}-{client}"
    assert (record.status, record.error_type) == (502, "upstream_error")
    assert record.input_tokens == 0  # the upstream never reported usage: not a completion


@pytest.mark.parametrize("client", CLIENTS)
def test_the_stock_openai_client_raises_on_the_error_event(gateway: str, client: str) -> None:
    sdk = openai.OpenAI(base_url=f"{gateway}/v1", api_key="x", max_retries=0)
    stream = sdk.chat.completions.create(
        model=f"midstream-error-{client}",
        messages=[{"role": "user", "content": "say hello"}],
        stream=True,
    )
    text = []
    with pytest.raises(openai.APIError, match="upstream"):
        for chunk in stream:
            text.append(chunk.choices[0].delta.content or "")
    assert "".join(text) == "Hel"


@pytest.mark.parametrize("client", CLIENTS)
def test_an_error_event_before_the_first_token_falls_back_to_the_next_expert(
    gateway: str, upstream: Upstream, redis_server: Any, client: str
) -> None:
    before = len(upstream.seen)
    headers, events = _stream(gateway, "auto", FALLBACK_PROMPT[client])
    assert upstream.seen[before]["body"]["model"] == "error-first"  # the remote was tried first
    assert headers["x-slm-router-expert"] == "small"
    assert not any(isinstance(e, dict) and "error" in e for e in events)
    assert events[-1] == "[DONE]"
    record = ledger_record(redis_server.url, headers["x-request-id"])
    assert (record.expert, record.status, record.error_type) == ("small", 200, "")
