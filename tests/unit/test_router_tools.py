"""Tools, structured outputs, logprobs and refusals through the gateway, with the stock openai
sdk (sync, async, stream) against a real loopback upstream configured as remote experts:
what the sdk sent reaches the expert, what it answered comes back in OpenAI's shape, the
routing says why, and the ledger is exact."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.unit.gateway_loopback import aledger_record, asdk, gateway, ledger_record, sdk
from tests.unit.openai_upstream import JSON_REPLY, LOGPROBS, REFUSAL, TOOL_CALLS, Upstream

__all__ = ["asdk", "gateway", "sdk"]  # fixtures

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True,
    },
}
ASK = [{"role": "user", "content": "what is the weather in Paris?"}]


def test_tools_to_auto_skip_the_chat_only_expert_and_come_back_as_tool_calls(
    sdk: openai.OpenAI, upstream: Upstream, redis_server: Any
) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="auto", messages=ASK, tools=[WEATHER], tool_choice="required", seed=7
    )
    resp = raw.parse()
    assert raw.headers["x-slm-router-expert"] == "up-tools"
    reason = raw.headers["x-slm-router-reason"]
    assert "needs tools -> skipped small" in reason and "-> up-tools" in reason
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
    assert calls == [(c["id"], c["name"], c["arguments"]) for c in TOOL_CALLS]
    sent = upstream.last()
    assert sent["tools"] == [WEATHER] and sent["tool_choice"] == "required" and sent["seed"] == 7
    # Usage is the upstream's, and the ledger costs exactly that: 11 in x $1/M + 5 out x $2/M.
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (11, 5)
    record = ledger_record(redis_server.url, raw.headers["x-request-id"])
    assert (record.expert, record.input_tokens, record.output_tokens) == ("up-tools", 11, 5)
    assert record.cost_nano == 11 * 1000 + 5 * 2000


async def test_streamed_tool_calls_arrive_as_argument_deltas(
    asdk: openai.AsyncOpenAI, redis_server: Any
) -> None:
    raw = await asdk.chat.completions.with_raw_response.create(
        model="auto",
        messages=ASK,
        tools=[WEATHER],
        stream=True,
        stream_options={"include_usage": True},
    )
    stream = raw.parse()
    calls: dict[int, dict[str, str]] = {}
    finish, usage, deltas = None, None, 0
    async for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for d in choice.delta.tool_calls or []:
                deltas += 1
                call = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += d.id or ""
                call["name"] += (d.function and d.function.name) or ""
                call["arguments"] += (d.function and d.function.arguments) or ""
    assert finish == "tool_calls"
    assert [calls[i] for i in sorted(calls)] == TOOL_CALLS
    assert deltas > len(TOOL_CALLS)  # arguments came in pieces, not whole
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (11, 5)
    record = await aledger_record(redis_server.url, raw.headers["x-request-id"])
    assert (record.output_tokens, record.cost_nano) == (5, 21000)


def test_tool_history_and_every_sampling_field_reach_the_expert(
    sdk: openai.OpenAI, upstream: Upstream
) -> None:
    history = [
        {"role": "developer", "content": "be brief"},
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": '{"temp": 21}'},
    ]
    sdk.chat.completions.create(
        model="up-echo",
        messages=history,  # type: ignore[arg-type]
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        stop=["END"],
        seed=3,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        user="u-42",
        metadata={"ticket": "T-1"},
        temperature=0.2,
        top_p=0.9,
    )
    sent = upstream.last()
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    # litellm leaves out an assistant turn's `"content": null`, which OpenAI reads the same.
    turns = [{k: v for k, v in m.items() if v is not None} for m in sent["messages"][2:]]
    assert turns == [{k: v for k, v in m.items() if v is not None} for m in history[2:]]
    expected = {
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "stop": ["END"],
        "seed": 3,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "user": "u-42",
        "metadata": {"ticket": "T-1"},
        "temperature": 0.2,
        "top_p": 0.9,
    }
    assert {k: sent.get(k) for k in expected} == expected


@pytest.mark.parametrize(
    "fmt",
    [
        {"type": "json_object"},
        {
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "schema": {"type": "object", "properties": {"answer": {"type": "integer"}}},
                "strict": True,
            },
        },
    ],
)
def test_structured_outputs_pass_through(
    sdk: openai.OpenAI, upstream: Upstream, fmt: dict[str, Any]
) -> None:
    resp = sdk.chat.completions.create(
        model="up-json",
        messages=ASK,
        response_format=fmt,  # type: ignore[arg-type]
    )
    assert json.loads(resp.choices[0].message.content or "") == json.loads(JSON_REPLY)
    assert upstream.last()["response_format"] == fmt


async def test_logprobs_and_refusals_come_back_in_openai_shape(
    asdk: openai.AsyncOpenAI, upstream: Upstream
) -> None:
    resp = await asdk.chat.completions.create(
        model="up-logprobs", messages=ASK, logprobs=True, top_logprobs=2
    )
    got = resp.choices[0].logprobs
    assert got is not None and [e.model_dump() for e in got.content or []] == LOGPROBS
    assert upstream.last()["top_logprobs"] == 2
    stream = await asdk.chat.completions.create(
        model="up-logprobs", messages=ASK, logprobs=True, stream=True
    )
    entries = [
        e.model_dump()
        async for c in stream
        for ch in c.choices
        for e in (ch.logprobs and ch.logprobs.content) or []
    ]
    assert entries == LOGPROBS
    refused = await asdk.chat.completions.create(model="up-refuse", messages=ASK)
    assert refused.choices[0].message.refusal == REFUSAL
    assert refused.choices[0].message.content is None
    stream = await asdk.chat.completions.create(model="up-refuse", messages=ASK, stream=True)
    pieces = [ch.delta.refusal or "" async for c in stream for ch in c.choices]
    assert "".join(pieces) == REFUSAL


def test_images_need_vision(sdk: openai.OpenAI, upstream: Upstream) -> None:
    image = {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
    }
    content = [{"type": "text", "text": "what is this?"}, image]
    raw = sdk.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": content}],  # type: ignore[misc,list-item]
    )
    assert raw.headers["x-slm-router-expert"] == "up-echo"  # the only one declaring vision
    assert upstream.last()["messages"][0]["content"] == content


def test_a_pinned_expert_lacking_a_capability_is_400_naming_it(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(model="small", messages=ASK, tools=[WEATHER])  # type: ignore[list-item]
    body: Any = err.value.body
    assert body["code"] == "unsupported_capability" and body["param"] == "tools"
    assert "needs tools" in body["message"]


def test_route_dry_run_and_models_say_what_each_expert_can_do(gateway: str) -> None:
    body = {"model": "auto", "messages": ASK, "tools": [WEATHER], "logprobs": True}
    plan = httpx.post(f"{gateway}/v1/route", json=body).json()
    assert plan["needs"] == ["chat", "logprobs", "tools"]
    assert plan["plan"]["expert"] == "up-tools"
    assert "needs tools, logprobs -> skipped small" in plan["plan"]["reason"]
    models = {m["id"]: m for m in httpx.get(f"{gateway}/v1/models").json()["data"]}
    assert models["small"]["metadata"]["capabilities"]["tools"] is False
    caps = models["up-tools"]["metadata"]["capabilities"]
    assert caps["tools"] and caps["json_schema"] and not caps["vision"]
    assert models["up-echo"]["metadata"]["capabilities"]["vision"] is True  # the YAML's word
    assert models["embed-fake"]["metadata"]["capabilities"]["embeddings"] is True


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"response_format": {"type": "xml"}}, "response_format"),
    ],
)
def test_what_no_expert_honours_is_refused_never_dropped(
    gateway: str, extra: dict[str, Any], param: str
) -> None:
    r = httpx.post(f"{gateway}/v1/chat/completions", json={"messages": ASK, **extra})
    assert r.status_code == 400, r.text
    assert (r.json()["error"]["param"] or "").startswith(param.split("[")[0]), r.json()
