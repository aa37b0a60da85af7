"""Tool calls on a local model whose chat template takes tools (Hermes-style `<tool_call>`):
rendered into the prompt, forced by constrained decoding for tool_choice "required" / a named
tool, parsed into tool_calls; a template without tools declares no tool support."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from experts.base import GenerationParams, Message, NamedToolChoice, Tool, ToolCall
from experts.errors import UnsupportedCapability
from experts.local import LocalBackend
from experts.local_tools import parse_tool_calls, template_supports_tools
from tests.unit.test_experts_local import build_tiny_llama, make_backend

HERMES = (
    "{%- if tools %}<|im_start|>system\nTools:\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}"
    'Call one as <tool_call>{"name": ..., "arguments": ...}</tool_call><|im_end|>\n{% endif %}'
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n"
    "{%- if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>\n"
    "{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}\n</tool_call>"
    "{% endfor %}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WEATHER = Tool(
    "get_weather",
    "Weather for a city",
    {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
)
TIME = Tool(
    "get_time", parameters={"type": "object", "properties": {}, "additionalProperties": False}
)
USER = [Message("user", "Weather in Paris?")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-tools"))


def hermes_backend(model_dir: Path) -> LocalBackend:
    # The tools' JSON takes ~500 tokens of the tiny BPE; RoPE runs past the trained length.
    backend = make_backend(model_dir, batch_wait_ms=0, context_window=2048)
    backend.tokenizer.chat_template = HERMES
    return backend


def test_only_tool_templates_declare_tools(model_dir: Path) -> None:
    plain = make_backend(model_dir)
    assert not plain.capabilities().tools  # ChatML fallback (SmolLM2's template: the same)
    assert hermes_backend(model_dir).capabilities().tools
    assert not template_supports_tools(type("T", (), {"chat_template": "{{ tools }}"})())


async def test_required_tool_call_is_forced_and_parsed(model_dir: Path) -> None:
    backend = hermes_backend(model_dir)
    params = GenerationParams(max_tokens=80, tools=(WEATHER, TIME), tool_choice="required")
    got = await backend.generate(USER, params)
    assert got.finish_reason == "tool_calls", got
    (call,) = got.tool_calls
    assert call.name in ("get_weather", "get_time") and call.id.startswith("call_")
    schema = WEATHER.parameters if call.name == "get_weather" else TIME.parameters
    jsonschema.validate(json.loads(call.arguments), dict(schema or {}))
    # The tools reached the prompt through the template.
    assert "get_weather" in backend.tokenizer.decode(backend._encode(USER, [{"x": "get_weather"}]))
    await backend.aclose()


async def test_named_tool_streams_as_deltas(model_dir: Path) -> None:
    backend = hermes_backend(model_dir)
    params = GenerationParams(
        max_tokens=80, tools=(WEATHER, TIME), tool_choice=NamedToolChoice("get_time")
    )
    chunks = [c async for c in backend.stream(USER, params)]
    deltas = [d for c in chunks for d in c.tool_calls]
    assert [(d.index, d.name) for d in deltas] == [(0, "get_time")]
    assert json.loads(deltas[0].arguments) == {}
    assert chunks[-1].finish_reason == "tool_calls"
    await backend.aclose()


async def test_tool_history_renders_on_a_tool_template(model_dir: Path) -> None:
    backend = hermes_backend(model_dir)
    history = [
        *USER,
        Message("assistant", None, tool_calls=(ToolCall("c1", "get_weather", '{"city":"Paris"}'),)),
        Message("tool", '{"temp": 12}', tool_call_id="c1"),
    ]
    got = await backend.generate(history, GenerationParams(max_tokens=4, temperature=0.0))
    assert got.finish_reason in ("stop", "length")
    with pytest.raises(UnsupportedCapability):
        await make_backend(model_dir).generate(history, GenerationParams(max_tokens=4))
    await backend.aclose()


def test_parse_tool_calls() -> None:
    text, calls = parse_tool_calls(
        'Sure.<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'
        "<tool_call>not json</tool_call>"
    )
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("f", {"a": 1})]
    assert text == "Sure.<tool_call>not json</tool_call>"
    assert parse_tool_calls("no calls") == ("no calls", ())
