"""Issue 18 through real Ray Serve: the stock openai client sends tool calls, structured outputs,
embeddings and Responses API requests to a remote expert on a loopback upstream and to the local
experts in their own deployments (SmolLM2 with constrained decoding, the shipped MiniLM); the
answers, the routing decisions and the ledger are checked against what was asked."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import httpx
import openai
import pytest

from tests.unit.openai_upstream import TOOL_CALLS, Upstream

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ASK = [{"role": "user", "content": "what is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client(gateway_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="x", max_retries=0, timeout=120)


def ledger_record(redis_url: str, header: str) -> Any:
    """The ledger's record of the request whose x-request-id header is `header` (Serve's proxy
    appends its own id to the gateway's: the gateway's comes first)."""
    import asyncio

    from router.finance.ledger import Ledger

    request_id = header.split(",")[0].strip()

    async def get() -> Any:
        ledger = Ledger(redis_url, "/tmp/unused-spool.jsonl")
        try:
            return await ledger.get(request_id)
        finally:
            await ledger.aclose()

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if (record := asyncio.run(get())) is not None:
            return record
        time.sleep(0.2)
    raise AssertionError(f"no ledger record for {request_id}")


def test_tools_go_to_the_remote_expert_that_has_them(
    client: openai.OpenAI, session_upstream: Upstream, gateway_redis: str
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=ASK,
        tools=[WEATHER],  # type: ignore[list-item]
    )
    resp = raw.parse()
    assert raw.headers["x-slm-router-expert"] == "up-tools"
    assert "needs tools -> skipped" in raw.headers["x-slm-router-reason"]
    calls = resp.choices[0].message.tool_calls or []
    assert [c.function.arguments for c in calls] == [c["arguments"] for c in TOOL_CALLS]
    assert resp.choices[0].finish_reason == "tool_calls"
    assert session_upstream.last()["tools"] == [WEATHER]
    record = ledger_record(gateway_redis, raw.headers["x-request-id"])
    assert (record.input_tokens, record.output_tokens, record.cost_nano) == (11, 5, 21000)
    stream = client.chat.completions.create(
        model="auto",
        messages=ASK,
        tools=[WEATHER],  # type: ignore[list-item]
        stream=True,
    )
    args = "".join(
        d.function.arguments or ""
        for c in stream
        for ch in c.choices
        for d in ch.delta.tool_calls or []
        if d.function
    )
    assert args == "".join(c["arguments"] for c in TOOL_CALLS)


def test_the_local_smollm2_answers_json_by_constrained_decoding(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    resp = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Name a city and its country as JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "place", "schema": schema, "strict": True},
        },
        max_tokens=48,
        temperature=0,
    )
    if resp.choices[0].finish_reason == "stop":  # a cut answer is an unfinished object
        doc = json.loads(resp.choices[0].message.content or "")
        assert set(doc) == {"city", "country"}
    else:
        assert (resp.choices[0].message.content or "").startswith("{")


def test_local_capabilities_are_declared_and_honoured(
    client: openai.OpenAI, gateway_url: str
) -> None:
    models = {m["id"]: m for m in httpx.get(f"{gateway_url}/v1/models").json()["data"]}
    caps = models["smollm2"]["metadata"]["capabilities"]
    assert caps["json_schema"] is True and caps["tools"] is False  # ChatML without tools
    assert models["minilm"]["metadata"]["capabilities"]["embeddings"] is True
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="smollm2", messages=ASK, tools=[WEATHER])  # type: ignore[list-item]
    assert err.value.code == "unsupported_capability"


def test_embeddings_from_the_local_minilm_deployment(
    client: openai.OpenAI, gateway_redis: str
) -> None:
    raw = client.embeddings.with_raw_response.create(model="auto", input=["red", "blue sky"])
    resp = raw.parse()
    assert raw.headers["x-slm-router-expert"] == "minilm"
    assert all(len(d.embedding) == 384 for d in resp.data)
    assert all(abs(math.sqrt(sum(x * x for x in d.embedding)) - 1) < 1e-4 for d in resp.data)
    record = ledger_record(gateway_redis, raw.headers["x-request-id"])
    assert record.domain == "embeddings" and record.input_tokens == resp.usage.prompt_tokens > 0


def test_responses_api_through_serve(client: openai.OpenAI) -> None:
    resp = client.responses.create(model="code-fake", input="hello serve")
    assert resp.output_text == "[code-fake] hello serve"
    with client.responses.stream(
        model="up-tools", input="weather?", tools=[{**WEATHER["function"], "type": "function"}]
    ) as s:  # type: ignore[list-item,dict-item]
        kinds = [e.type for e in s]
        final = s.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [o.call_id for o in final.output if o.type == "function_call"] == [
        c["id"] for c in TOOL_CALLS
    ]
