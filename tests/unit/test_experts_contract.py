"""The experts' contract: OpenAI shapes round-trip through the dataclasses, a request's needs,
capabilities (derived and overridden from YAML), and the fake backend's faked features."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experts.base import GenerationParams, Message, NamedToolChoice, ResponseFormat, Tool
from experts.capabilities import Capabilities
from experts.errors import InvalidGenerationRequest, UnsupportedCapability
from experts.needs import describe_missing, requirements
from experts.openai_stream import assistant_message_to_openai, delta_to_openai
from experts.openai_wire import (
    message_from_openai,
    message_to_openai,
    response_format_from_openai,
    response_format_to_openai,
    tool_choice_from_openai,
    tool_choice_to_openai,
    tool_from_openai,
    tool_to_openai,
)
from experts.registry import build_backend
from experts.spec import ExpertSpec

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi", "name": "ann"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "high"}},
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
        ],
    },
    {"role": "tool", "content": "42", "tool_call_id": "c1"},
    {"role": "assistant", "content": "done"},
]


@pytest.mark.parametrize("raw", MESSAGES)
def test_messages_round_trip_intact(raw: dict[str, Any]) -> None:
    assert message_to_openai(message_from_openai(raw)) == raw


def test_developer_role_arrives_as_system() -> None:
    assert message_from_openai({"role": "developer", "content": "x"}).role == "system"


def test_message_text_and_images() -> None:
    m = message_from_openai(MESSAGES[2])
    assert m.text == "what is this?"
    assert m.has_images
    assert not message_from_openai(MESSAGES[1]).has_images


text_st = st.text(max_size=20)
part_st = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, text_st),
    st.builds(
        lambda u, d: {"type": "image_url", "image_url": {"url": u, **({"detail": d} if d else {})}},
        text_st,
        st.sampled_from([None, "low", "high", "auto"]),
    ),
)
call_st = st.builds(
    lambda i, n, a: {"id": i, "type": "function", "function": {"name": n, "arguments": a}},
    text_st,
    text_st,
    text_st,
)
message_st = st.builds(
    lambda role, content, name, calls, call_id: {
        "role": role,
        "content": content,
        **({"name": name} if name is not None else {}),
        **({"tool_calls": calls} if calls else {}),
        **({"tool_call_id": call_id} if call_id is not None else {}),
    },
    st.sampled_from(["system", "user", "assistant", "tool"]),
    st.one_of(st.none(), text_st, st.lists(part_st, max_size=3)),
    st.one_of(st.none(), text_st),
    st.lists(call_st, max_size=2),
    st.one_of(st.none(), text_st),
)


@settings(max_examples=200, deadline=None)
@given(message_st)
def test_any_message_round_trips(raw: dict[str, Any]) -> None:
    assert message_to_openai(message_from_openai(raw)) == raw


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ({"content": "no role"}, "messages[3]"),
        ({"role": "user", "content": 7}, "messages[3]"),
        ({"role": "user", "content": [{"type": "image_url"}]}, "messages[3].content[0]"),
        ({"role": "assistant", "tool_calls": [{"id": "x"}]}, "messages[3].tool_calls"),
    ],
)
def test_malformed_messages_name_the_parameter(raw: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidGenerationRequest) as caught:
        message_from_openai(raw, 3)
    assert caught.value.param == param
    assert caught.value.status_code == 400


def test_tools_choices_and_formats_round_trip() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "d",
            "parameters": {"type": "object", "properties": {}},
            "strict": True,
        },
    }
    assert tool_to_openai(tool_from_openai(tool)) == tool
    for choice in ("none", "auto", "required", {"type": "function", "function": {"name": "f"}}):
        parsed = tool_choice_from_openai(choice)
        assert parsed is not None
        assert tool_choice_to_openai(parsed) == choice
    for fmt in (
        {"type": "text"},
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}},
        {
            "type": "json_schema",
            "json_schema": {"name": "n", "schema": {}, "strict": True, "description": "d"},
        },
    ):
        parsed_fmt = response_format_from_openai(fmt)
        assert parsed_fmt is not None
        assert response_format_to_openai(parsed_fmt) == fmt


@pytest.mark.parametrize(
    "bad",
    [
        lambda: tool_from_openai({"type": "retrieval"}),
        lambda: tool_from_openai({"type": "function", "function": {"description": "no name"}}),
        lambda: tool_choice_from_openai("sometimes"),
        lambda: response_format_from_openai({"type": "xml"}),
        lambda: response_format_from_openai({"type": "json_schema"}),
    ],
)
def test_malformed_parameters_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidGenerationRequest):
        bad()


# -- needs and capabilities -------------------------------------------------------------------

TOOL = Tool("f", parameters={"type": "object"})


@pytest.mark.parametrize(
    ("messages", "params", "needs"),
    [
        ([Message("user", "hi")], GenerationParams(), {"chat"}),
        ([Message("user", "hi")], GenerationParams(tools=(TOOL,)), {"chat", "tools"}),
        ([Message("user", "hi")], GenerationParams(tools=(TOOL,), tool_choice="none"), {"chat"}),
        ([Message("tool", "42", tool_call_id="c")], GenerationParams(), {"chat", "tools"}),
        (
            [Message("user", "hi")],
            GenerationParams(response_format=ResponseFormat("json_schema", "n", {})),
            {"chat", "json_schema"},
        ),
        (
            [Message("user", "hi")],
            GenerationParams(response_format=ResponseFormat("text")),
            {"chat"},
        ),
        ([Message("user", "hi")], GenerationParams(logprobs=True), {"chat", "logprobs"}),
        ([message_from_openai(MESSAGES[2])], GenerationParams(), {"chat", "vision"}),
    ],
)
def test_requirements(messages: list[Message], params: GenerationParams, needs: set[str]) -> None:
    assert requirements(messages, params) == needs


def test_missing_and_overrides() -> None:
    caps = Capabilities(tools=True, context_window=100)
    assert caps.missing({"chat", "tools", "vision", "json_schema"}) == ("json_schema", "vision")
    over = caps.with_overrides({"vision": True, "tools": None, "context_window": 50})
    assert (over.vision, over.tools, over.context_window) == (True, True, 50)
    assert "yaml(context_window, vision)" in over.source
    assert describe_missing("smollm2", ("tools",)) == "needs tools -> skipped smollm2"
    assert caps.names() == {"chat", "tools"}
    with pytest.raises(ValueError, match="unknown capability"):
        caps.with_overrides({"telepathy": True})


def test_yaml_overrides_reach_the_backend_and_model_info() -> None:
    spec = ExpertSpec.model_validate(
        {"backend": "fake", "capabilities": {"tools": True, "context_window": 999}}
    )
    backend = build_backend("f", spec)
    caps = backend.info().capabilities
    assert caps is not None
    assert (caps.tools, caps.json_schema, caps.context_window) == (True, False, 999)
    assert backend.info().context_window == 999


def test_spec_refuses_two_different_windows() -> None:
    with pytest.raises(ValueError, match="disagree"):
        ExpertSpec.model_validate(
            {"backend": "fake", "context_window": 10, "capabilities": {"context_window": 20}}
        )
    with pytest.raises(ValueError, match="extra"):
        ExpertSpec.model_validate({"backend": "fake", "capabilities": {"telepathy": True}})


def test_litellm_model_table_capabilities() -> None:
    from experts.remote import litellm_capabilities

    gpt = litellm_capabilities("gpt-4o-mini", None)
    assert (gpt.tools, gpt.json_schema, gpt.json_object, gpt.logprobs, gpt.vision) == (
        True,
        True,
        True,
        True,
        True,
    )
    assert gpt.context_window == 128000 and gpt.source == "litellm model table"
    emb = litellm_capabilities("text-embedding-3-small", None)
    assert (emb.chat, emb.embeddings, emb.tools) == (False, True, False)
    unknown = litellm_capabilities("openai/my-vllm-model", 4096)
    assert (unknown.tools, unknown.json_object, unknown.vision) == (True, True, False)
    assert "not in its table" in unknown.source


# -- the fake backend fakes what it is given, refuses the rest --------------------------------


def fake(**caps: Any) -> Any:
    spec = ExpertSpec.model_validate({"backend": "fake", "capabilities": caps or None})
    return build_backend("f", spec)


async def test_fake_refuses_what_it_was_not_given() -> None:
    with pytest.raises(UnsupportedCapability, match="tools"):
        await fake().generate([Message("user", "hi")], GenerationParams(tools=(TOOL,)))


async def test_fake_calls_tools_when_it_may() -> None:
    params = GenerationParams(tools=(TOOL, Tool("g")), tool_choice=NamedToolChoice("g"))
    got = await fake(tools=True).generate([Message("user", "hi there")], params)
    assert got.finish_reason == "tool_calls"
    assert (got.tool_calls[0].name, json.loads(got.tool_calls[0].arguments)) == (
        "g",
        {"text": "hi there"},
    )
    assert assistant_message_to_openai(got)["content"] is None
    chunks = [c async for c in fake(tools=True).stream([Message("user", "x")], params)]
    assert delta_to_openai(chunks[0]) == {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_fake_0",
                "type": "function",
                "function": {"name": "g", "arguments": ""},
            }
        ]
    }
    assert chunks[-1].finish_reason == "tool_calls"


async def test_fake_json_and_logprobs() -> None:
    params = GenerationParams(response_format=ResponseFormat("json_object"), logprobs=True)
    got = await fake(json_object=True, logprobs=True).generate([Message("user", "hi")], params)
    assert json.loads(got.text) == {"reply": "[f] hi"}
    assert got.logprobs is not None and len(got.logprobs.content) == got.completion_tokens
