"""/v1/embeddings, /v1/responses and the refused /v1/completions, with the stock openai sdk
(sync, async, stream) against the real gateway app on loopback: remote experts on the fake
upstream, the fake embedding expert and the shipped MiniLM in-process."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import openai
import pytest

from tests.unit.gateway_loopback import aledger_record, asdk, gateway, ledger_record, sdk
from tests.unit.openai_upstream import JSON_REPLY, TOOL_CALLS, Upstream

__all__ = ["asdk", "gateway", "sdk"]  # fixtures

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


# -- embeddings -------------------------------------------------------------------------------


def test_embeddings_auto_go_to_the_first_embedding_expert_and_are_costed(
    sdk: openai.OpenAI, upstream: Upstream, redis_server: Any
) -> None:
    # The SDK asks for base64 by default and decodes it: both encodings must be right.
    raw = sdk.embeddings.with_raw_response.create(
        model="auto", input=["one two", "three"], dimensions=4
    )
    resp = raw.parse()
    assert raw.headers["x-slm-router-expert"] == "embed-remote"
    assert "first expert with embeddings -> embed-remote" in raw.headers["x-slm-router-reason"]
    assert [d.embedding for d in resp.data] == [[7.0, 0.5, 0.5, 0.5], [5.0, 0.5, 0.5, 0.5]]
    assert upstream.last()["input"] == ["one two", "three"]
    assert upstream.last()["dimensions"] == 4
    assert resp.usage.prompt_tokens == 3  # the upstream's count
    floats = sdk.embeddings.create(model="auto", input="one two", encoding_format="float")
    assert floats.data[0].embedding == [7.0, 0.5, 0.5]
    record = ledger_record(redis_server.url, raw.headers["x-request-id"])
    assert (record.expert, record.domain, record.input_tokens, record.output_tokens) == (
        "embed-remote",
        "embeddings",
        3,
        0,
    )
    assert record.cost_nano == 3 * 20  # 3 tokens x $0.02 per 1M = 60 nano-USD


async def test_the_shipped_minilm_embeds_in_process(
    asdk: openai.AsyncOpenAI, redis_server: Any
) -> None:
    raw = await asdk.embeddings.with_raw_response.create(
        model="minilm", input=["the cat sat", "a dog ran"]
    )
    resp = raw.parse()
    vectors = [d.embedding for d in resp.data]
    assert [len(v) for v in vectors] == [384, 384]
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in vectors)
    assert resp.usage.prompt_tokens == 2 * (3 + 2)  # word pieces plus [CLS] and [SEP]
    record = await aledger_record(redis_server.url, raw.headers["x-request-id"])
    assert record.expert == "minilm" and record.input_tokens == 10 and record.cost_nano > 0


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "small", "input": "x"}, 400, "model"),  # a chat expert
        ({"model": "auto", "input": [1, 2, 3]}, 400, "input"),  # token ids
        ({"model": "auto", "input": []}, 400, "input"),
        ({"model": "auto", "input": ["ok", " "]}, 400, "input"),
        ({"model": "nope", "input": "x"}, 404, "model"),
    ],
)
def test_embeddings_refusals_are_clear(
    gateway: str, body: dict[str, Any], status: int, param: str
) -> None:
    r = httpx.post(f"{gateway}/v1/embeddings", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


# -- responses --------------------------------------------------------------------------------


def test_responses_text_and_instructions_take_the_chat_path(
    sdk: openai.OpenAI, upstream: Upstream
) -> None:
    raw = sdk.responses.with_raw_response.create(
        model="up-json",
        instructions="answer in JSON",
        input="what is six times seven?",
        text={"format": {"type": "json_object"}},
        max_output_tokens=50,
        metadata={"k": "v"},
    )
    resp = raw.parse()
    assert raw.headers["x-slm-router-expert"] == "up-json"
    assert resp.status == "completed" and resp.model == "up-json"
    assert json.loads(resp.output_text) == json.loads(JSON_REPLY)
    assert resp.usage is not None and (resp.usage.input_tokens, resp.usage.output_tokens) == (
        11,
        5,
    )
    sent = upstream.last()
    assert sent["messages"] == [
        {"role": "system", "content": "answer in JSON"},
        {"role": "user", "content": "what is six times seven?"},
    ]
    assert sent["response_format"] == {"type": "json_object"} and sent["max_tokens"] == 50
    assert resp.metadata == {"k": "v"} and resp.store is False


def test_responses_tools_come_back_as_function_calls_and_the_loop_continues(
    sdk: openai.OpenAI, upstream: Upstream
) -> None:
    resp = sdk.responses.create(model="auto", input="weather in Paris?", tools=[WEATHER])  # type: ignore[list-item]
    calls = [(o.call_id, o.name, o.arguments) for o in resp.output if o.type == "function_call"]
    assert calls == [(c["id"], c["name"], c["arguments"]) for c in TOOL_CALLS]
    assert upstream.last()["tools"] == [
        {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
    ]
    # The sdk runs the tools and sends the outputs back with the calls, as the SDK does.
    follow = [
        {"role": "user", "content": "weather in Paris?"},
        *[o.model_dump(exclude_none=True) for o in resp.output if o.type == "function_call"],
        *[
            {"type": "function_call_output", "call_id": c["id"], "output": "21C"}
            for c in TOOL_CALLS
        ],
    ]
    sdk.responses.create(model="up-echo", input=follow, tools=[WEATHER])  # type: ignore[arg-type,list-item]
    sent = upstream.last()["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in sent[1]["tool_calls"]] == [c["id"] for c in TOOL_CALLS]
    assert [m["tool_call_id"] for m in sent[2:]] == [c["id"] for c in TOOL_CALLS]


async def test_responses_stream_events_in_the_api_shape(
    asdk: openai.AsyncOpenAI, redis_server: Any
) -> None:
    kinds: list[str] = []
    text = ""
    async with asdk.responses.stream(model="up-echo", input="hello there") as stream:
        async for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
        final = await stream.get_final_response()
    assert text == "hello from the loopback server" == final.output_text
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert final.usage is not None and final.usage.output_tokens == 5


def test_responses_streamed_tool_calls(sdk: openai.OpenAI) -> None:
    events = list(
        sdk.responses.create(model="up-tools", input="weather?", tools=[WEATHER], stream=True)  # type: ignore[list-item]
    )
    args: dict[str, str] = {}
    for e in events:
        if e.type == "response.function_call_arguments.delta":
            args[e.item_id] = args.get(e.item_id, "") + e.delta
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert [(d.call_id, d.arguments) for d in done] == [
        (c["id"], c["arguments"]) for c in TOOL_CALLS
    ]  # type: ignore[union-attr]
    assert sorted(args.values()) == sorted(c["arguments"] for c in TOOL_CALLS)
    assert events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_a_responses_stream_that_breaks_ends_with_error_and_failed(gateway: str) -> None:
    body = {"model": "flaky", "input": "one two three", "stream": True}
    with httpx.stream("POST", f"{gateway}/v1/responses", json=body) as r:
        assert r.status_code == 200
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert "response.output_text.delta" in kinds
    assert kinds[-2:] == ["error", "response.failed"]
    assert events[-1]["response"]["status"] == "failed"
    assert "failed mid-stream" in events[-1]["response"]["error"]["message"]


def test_responses_images_need_vision(sdk: openai.OpenAI, upstream: Upstream) -> None:
    url = "data:image/png;base64,AAAA"
    item = {
        "role": "user",
        "content": [
            {"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": url, "detail": "low"},
        ],
    }
    raw = sdk.responses.with_raw_response.create(model="auto", input=[item])  # type: ignore[list-item]
    assert raw.headers["x-slm-router-expert"] == "up-echo"
    assert upstream.last()["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": url, "detail": "low"},
    }


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"metadata": {"k": "v" * 600}}, "metadata"),
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"tools": [{"type": "web_search"}]}, "tools"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input"),
        ({"tools": [WEATHER], "tool_choice": "required", "model": "small"}, "tools"),
    ],
)
def test_responses_refusals_name_the_field(gateway: str, extra: dict[str, Any], param: str) -> None:
    body = {"model": "auto", "input": "hi", **extra}
    r = httpx.post(f"{gateway}/v1/responses", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_completions_and_stored_responses_are_refused_clearly(gateway: str) -> None:
    r = httpx.post(f"{gateway}/v1/completions", json={"model": "auto", "prompt": "hi"})
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "unsupported_endpoint" and "/v1/chat/completions" in err["message"]
    r = httpx.get(f"{gateway}/v1/responses/resp_123")
    assert r.status_code == 404 and r.json()["error"]["code"] == "response_not_stored"
