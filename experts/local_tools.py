"""Tool calls on local models, where the model's chat template supports them.

Supported: templates that take `tools` and write Hermes-style calls,
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (Qwen2.5, Hermes, SmolLM3 and
others). Such a model's output is parsed into tool calls; with tool_choice "required" or a named
tool the call is forced by constrained decoding. Other templates (SmolLM2's takes no tools)
declare no tool support: the router sends tool requests elsewhere.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

from experts.base import GenerationParams, Message, NamedToolChoice, ToolCall
from experts.constrained import JSON_OPTIONS
from experts.openai_wire import tool_to_openai

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(re.escape(OPEN) + r"\s*(.*?)\s*" + re.escape(CLOSE), re.DOTALL)


def template_supports_tools(tokenizer: Any) -> bool:
    """The chat template reads a `tools` variable and writes `<tool_call>` blocks."""
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str) or OPEN not in template:
        return False
    import jinja2
    import jinja2.meta

    try:
        parsed = jinja2.Environment().parse(template)
    except jinja2.TemplateSyntaxError:
        return False
    return "tools" in jinja2.meta.find_undeclared_variables(parsed)


def template_tools(params: GenerationParams) -> list[dict[str, Any]] | None:
    """`tools=` for apply_chat_template (OpenAI's tool shape is what HF templates expect)."""
    return [tool_to_openai(t) for t in params.tools] if params.wants_tools else None


def template_message(m: Message) -> dict[str, Any]:
    """A message for a tool-aware HF template: arguments as objects, as those templates expect."""
    out: dict[str, Any] = {"role": m.role, "content": m.text}
    if m.tool_calls:
        out["tool_calls"] = [
            {"type": "function", "id": c.id, "function": {"name": c.name, "arguments": _args(c)}}
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        out["name"] = m.name
    return out


def _args(call: ToolCall) -> Any:
    try:
        return json.loads(call.arguments or "{}")
    except ValueError:
        return call.arguments


def parse_tool_calls(text: str) -> tuple[str, tuple[ToolCall, ...]]:
    """(text outside the calls, the calls). A block that is not a JSON call stays in the text."""
    calls: list[ToolCall] = []

    def take(match: re.Match[str]) -> str:
        try:
            data = json.loads(match.group(1))
        except ValueError:
            return match.group(0)
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return match.group(0)
        arguments = data.get("arguments", data.get("parameters", {}))
        calls.append(ToolCall(f"call_{uuid.uuid4().hex[:24]}", data["name"], json.dumps(arguments)))
        return ""

    rest = _BLOCK.sub(take, text)
    return (rest.strip() if calls else text), tuple(calls)


def forced_call_lark(params: GenerationParams) -> str | None:
    """A grammar that makes the model call a tool, for tool_choice "required" or a named tool
    (None when the model may choose)."""
    choice = params.tool_choice
    forced = choice == "required" or isinstance(choice, NamedToolChoice)
    if not (params.wants_tools and forced):
        return None
    tools: Sequence[Any] = params.tools
    if isinstance(choice, NamedToolChoice):
        tools = [t for t in params.tools if t.name == choice.name]
    schemas = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t.name},
                "arguments": dict(t.parameters or {"type": "object"}),
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    schema = {**schema, "x-guidance": JSON_OPTIONS}
    return f'start: "{OPEN}\\n" call "\\n{CLOSE}"\ncall: %json {json.dumps(schema)}'
