"""What applications send reaches the upstream, and what it answers comes back in OpenAI's shape,
through both remote clients (litellm and httpx), stream and non-stream; upstream errors in the
middle of a stream end it with an error, never a normal finish; retries honour Retry-After."""

from __future__ import annotations

import json
import time

import pytest

from experts.base import (
    GenerationParams,
    ImagePart,
    Message,
    NamedToolChoice,
    ResponseFormat,
    StreamChunk,
    TextPart,
    Tool,
    ToolCall,
)
from experts.errors import ExpertOverloaded, UpstreamStreamError
from experts.openai_stream import assistant_message_to_openai, delta_to_openai
from experts.openai_wire import logprobs_to_openai
from experts.upstream import UpstreamBackend
from tests.unit.openai_upstream import (
    JSON_REPLY,
    LOGPROBS,
    REFUSAL,
    TOOL_CALLS,
    Make,
    Upstream,
)

WEATHER = Tool(
    "get_weather",
    "Weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    strict=True,
)
HISTORY = [
    Message("system", "be brief"),
    Message(
        "user", (TextPart("what is in"), ImagePart("data:image/png;base64,AAAA", detail="low"))
    ),
    Message("assistant", None, tool_calls=(ToolCall("call_0", "get_weather", '{"city":"Oslo"}'),)),
    Message("tool", '{"temp": 3}', tool_call_id="call_0", name="get_weather"),
    Message("user", "and now?"),
]


async def collect(backend: UpstreamBackend, params: GenerationParams) -> list[StreamChunk]:
    return [c async for c in backend.stream(HISTORY, params)]


# -- the request ------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_every_field_reaches_the_upstream(
    make: Make, upstream: Upstream, stream: bool
) -> None:
    params = GenerationParams(
        max_tokens=20,
        temperature=0.3,
        top_p=0.9,
        stop=("END",),
        seed=7,
        tools=(WEATHER,),
        tool_choice=NamedToolChoice("get_weather"),
        parallel_tool_calls=False,
        response_format=ResponseFormat("json_schema", "answer", {"type": "object"}, strict=True),
        logprobs=True,
        top_logprobs=2,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        user="user-17",
        metadata={"team": "search"},
    )
    backend = make()
    if stream:
        await collect(backend, params)
    else:
        await backend.generate(HISTORY, params)
    sent = upstream.last()
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": dict(WEATHER.parameters or {}),
                "strict": True,
            },
        }
    ]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    }
    expected = {
        "parallel_tool_calls": False,
        "logprobs": True,
        "top_logprobs": 2,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "user": "user-17",
        "metadata": {"team": "search"},
        "seed": 7,
        "stop": ["END"],
        "max_tokens": 20,
    }
    assert {k: sent.get(k) for k in expected} == expected


async def test_history_with_tool_turns_and_images_is_forwarded_intact(
    make: Make, upstream: Upstream
) -> None:
    await make().generate(HISTORY, GenerationParams())
    messages = upstream.last()["messages"]
    assert messages[1]["content"] == [
        {"type": "text", "text": "what is in"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
    ]
    assert messages[2]["tool_calls"] == [
        {
            "id": "call_0",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
        }
    ]
    assert messages[3] == {
        "role": "tool",
        "content": '{"temp": 3}',
        "tool_call_id": "call_0",
        "name": "get_weather",
    }


async def test_unset_optional_fields_are_not_sent(make: Make, upstream: Upstream) -> None:
    await make().generate([Message("user", "hi")], GenerationParams())
    sent = upstream.last()
    for field in ("tools", "tool_choice", "response_format", "logprobs", "user", "metadata"):
        assert field not in sent


# -- the answer -------------------------------------------------------------------------------


async def test_tool_calls_come_back(make: Make) -> None:
    got = await make("tools").generate(HISTORY, GenerationParams(tools=(WEATHER,)))
    assert got.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in got.tool_calls] == [
        (c["id"], c["name"], c["arguments"]) for c in TOOL_CALLS
    ]
    assert (got.prompt_tokens, got.completion_tokens) == (11, 5)
    message = assistant_message_to_openai(got)
    assert message["content"] is None
    assert message["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": TOOL_CALLS[0]["arguments"],
    }


async def test_tool_calls_stream_as_argument_deltas(make: Make) -> None:
    chunks = await collect(make("tools"), GenerationParams(tools=(WEATHER,)))
    deltas = [d for c in chunks for d in c.tool_calls]
    assert [(d.index, d.id, d.name) for d in deltas if d.id] == [
        (0, "call_a", "get_weather"),
        (1, "call_b", "get_time"),
    ]
    for index, call in enumerate(TOOL_CALLS):
        assert "".join(d.arguments for d in deltas if d.index == index) == call["arguments"]
    final = chunks[-1]
    assert (final.finish_reason, final.prompt_tokens, final.completion_tokens) == (
        "tool_calls",
        11,
        5,
    )
    first = delta_to_openai(chunks[0])
    assert first["tool_calls"][0]["id"] == "call_a"
    assert first["tool_calls"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("stream", [False, True])
async def test_json_answer_comes_back(make: Make, stream: bool) -> None:
    params = GenerationParams(response_format=ResponseFormat("json_object"))
    backend = make("json")
    if stream:
        text = "".join(c.text for c in await collect(backend, params))
    else:
        text = (await backend.generate(HISTORY, params)).text
    assert json.loads(text) == json.loads(JSON_REPLY)


@pytest.mark.parametrize("stream", [False, True])
async def test_logprobs_come_back_in_openais_shape(make: Make, stream: bool) -> None:
    params = GenerationParams(logprobs=True, top_logprobs=2)
    backend = make("logprobs")
    if stream:
        chunks = await collect(backend, params)
        content = [e for c in chunks if c.logprobs for e in c.logprobs.content]
        shaped = logprobs_to_openai(type(chunks[0].logprobs)(tuple(content)))  # type: ignore[misc]
    else:
        got = await backend.generate(HISTORY, params)
        shaped = logprobs_to_openai(got.logprobs)
    assert shaped is not None
    assert shaped["content"] == LOGPROBS


@pytest.mark.parametrize("stream", [False, True])
async def test_refusal_comes_back(make: Make, stream: bool, client: str) -> None:
    if stream and client == "litellm":
        pytest.xfail("litellm 1.106.2 drops `refusal` deltas from streams (docs/EXPERTS.md)")
    backend = make("refuse")
    if stream:
        refusal = "".join(c.refusal or "" for c in await collect(backend, GenerationParams()))
    else:
        got = await backend.generate(HISTORY, GenerationParams())
        refusal = got.refusal or ""
        assert assistant_message_to_openai(got)["content"] is None
    assert refusal == REFUSAL


# -- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("behaviour", ["midstream-error", "cutoff"])
async def test_failure_after_the_first_token_ends_the_stream_with_an_error(
    make: Make, behaviour: str
) -> None:
    got: list[StreamChunk] = []
    with pytest.raises(UpstreamStreamError):
        async for chunk in make(behaviour).stream(HISTORY, GenerationParams()):
            got.append(chunk)
    assert [c.text for c in got] == ["Hel"]
    assert all(c.finish_reason is None for c in got)


async def test_error_event_before_the_first_token_raises_before_yielding(make: Make) -> None:
    stream = make("error-first").stream(HISTORY, GenerationParams())
    with pytest.raises(UpstreamStreamError) as caught:
        await anext(stream)
    assert caught.value.retryable  # the router may fall back to the next expert


async def test_retry_after_is_honoured(make: Make, upstream: Upstream, client: str) -> None:
    user = f"retry-{client}"
    upstream.busy_left[user] = 2
    before = len(upstream.seen)
    started = time.monotonic()
    got = await make("busy-then-ok", retries=2).generate(HISTORY, GenerationParams(user=user))
    waited = time.monotonic() - started
    assert got.text
    assert len(upstream.seen) - before == 3
    assert waited >= 2 * float(upstream.retry_after)  # never earlier than the upstream asked


async def test_retry_after_beyond_the_cap_is_not_waited_out(make: Make) -> None:
    started = time.monotonic()
    with pytest.raises(ExpertOverloaded) as caught:
        await make("busy-long", retries=3).generate(HISTORY, GenerationParams())
    assert time.monotonic() - started < 5
    assert caught.value.retry_after == pytest.approx(120)
