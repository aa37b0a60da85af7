"""OpenAI's chat-completions JSON <-> the experts' dataclasses, in both directions.

`*_from_openai` read what a client (or an upstream) sent; `*_to_openai` write what an upstream
(or a client) reads. Round trips keep every field OpenAI defines for these shapes; content parts
this module does not model are carried verbatim (RawPart). Malformed input raises
InvalidGenerationRequest naming the offending parameter, so the router can answer 400.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from experts.base import (
    ChoiceLogprobs,
    ContentPart,
    GenerationParams,
    ImagePart,
    Message,
    NamedToolChoice,
    RawPart,
    ResponseFormat,
    TextPart,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    TopLogprob,
)
from experts.errors import InvalidGenerationRequest

Json = dict[str, Any]


def _need(obj: Any, key: str, kind: type, param: str) -> Any:
    value = obj.get(key) if isinstance(obj, Mapping) else None
    if not isinstance(value, kind):
        raise InvalidGenerationRequest(f"{param}.{key} must be a {kind.__name__}", param=param)
    return value


def _object(obj: Mapping[str, Any], key: str, param: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if not isinstance(value, Mapping):
        raise InvalidGenerationRequest(f"{param}.{key} must be an object", param=param)
    return value


# -- messages ---------------------------------------------------------------------------------


def part_from_openai(part: Mapping[str, Any], param: str = "content") -> ContentPart:
    kind = _need(part, "type", str, param)
    if kind == "text":
        return TextPart(_need(part, "text", str, param))
    if kind == "image_url":
        image = part.get("image_url")
        if isinstance(image, str):  # some clients send the URL directly
            return ImagePart(image)
        image = _object(part, "image_url", param)
        url = _need(image, "url", str, f"{param}.image_url")
        detail = image.get("detail")
        return ImagePart(url, detail if isinstance(detail, str) else None)
    return RawPart(kind, {k: v for k, v in part.items() if k != "type"})


def part_to_openai(part: ContentPart) -> Json:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        image: Json = {"url": part.url}
        if part.detail is not None:
            image["detail"] = part.detail
        return {"type": "image_url", "image_url": image}
    return {"type": part.type, **part.data}


def tool_call_from_openai(call: Mapping[str, Any], param: str = "tool_calls") -> ToolCall:
    function = _object(call, "function", param)
    name = _need(function, "name", str, f"{param}.function")
    arguments = function.get("arguments")
    return ToolCall(
        str(call.get("id") or ""), name, arguments if isinstance(arguments, str) else ""
    )


def tool_call_to_openai(call: ToolCall) -> Json:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def message_from_openai(msg: Mapping[str, Any], index: int = 0) -> Message:
    param = f"messages[{index}]"
    role = _need(msg, "role", str, param)
    raw = msg.get("content")
    content: str | tuple[ContentPart, ...] | None
    if raw is None or isinstance(raw, str):
        content = raw
    elif isinstance(raw, list):
        content = tuple(part_from_openai(p, f"{param}.content[{i}]") for i, p in enumerate(raw))
    else:
        raise InvalidGenerationRequest(f"{param}.content must be a string or a list", param=param)
    calls = msg.get("tool_calls") or ()
    return Message(
        "system" if role == "developer" else role,
        content,
        name=msg.get("name") if isinstance(msg.get("name"), str) else None,
        tool_calls=tuple(tool_call_from_openai(c, f"{param}.tool_calls") for c in calls),
        tool_call_id=msg.get("tool_call_id") if isinstance(msg.get("tool_call_id"), str) else None,
    )


def message_to_openai(m: Message) -> Json:
    out: Json = {"role": m.role}
    if isinstance(m.content, tuple):
        out["content"] = [part_to_openai(p) for p in m.content]
    else:
        out["content"] = m.content
    if m.name is not None:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [tool_call_to_openai(c) for c in m.tool_calls]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def messages_to_openai(messages: Sequence[Message]) -> list[Json]:
    return [message_to_openai(m) for m in messages]


# -- request parameters -----------------------------------------------------------------------


def tool_from_openai(tool: Mapping[str, Any], index: int = 0) -> Tool:
    param = f"tools[{index}]"
    if tool.get("type", "function") != "function":
        raise InvalidGenerationRequest(f"{param}.type must be 'function'", param="tools")
    function = _object(tool, "function", param)
    name = _need(function, "name", str, f"{param}.function")
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, Mapping):
        raise InvalidGenerationRequest(
            f"{param}.function.parameters must be an object", param="tools"
        )
    return Tool(name, function.get("description"), parameters, function.get("strict"))


def tool_to_openai(tool: Tool) -> Json:
    function: Json = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    if tool.parameters is not None:
        function["parameters"] = dict(tool.parameters)
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def tools_from_openai(tools: Sequence[Mapping[str, Any]] | None) -> tuple[Tool, ...]:
    return tuple(tool_from_openai(t, i) for i, t in enumerate(tools or ()))


def tool_choice_from_openai(choice: Any) -> ToolChoice | None:
    if choice is None:
        return None
    if choice in ("none", "auto", "required"):
        return choice  # type: ignore[no-any-return]
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        return NamedToolChoice(_need(choice.get("function"), "name", str, "tool_choice.function"))
    raise InvalidGenerationRequest(
        "tool_choice must be 'none', 'auto', 'required' or a named function", param="tool_choice"
    )


def tool_choice_to_openai(choice: ToolChoice) -> str | Json:
    if isinstance(choice, NamedToolChoice):
        return {"type": "function", "function": {"name": choice.name}}
    return choice


def response_format_from_openai(fmt: Mapping[str, Any] | None) -> ResponseFormat | None:
    if fmt is None:
        return None
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        return ResponseFormat(kind)
    if kind != "json_schema":
        raise InvalidGenerationRequest(
            "response_format.type must be 'text', 'json_object' or 'json_schema'",
            param="response_format",
        )
    spec = _object(fmt, "json_schema", "response_format")
    name = _need(spec, "name", str, "response_format.json_schema")
    schema = spec.get("schema")
    if schema is not None and not isinstance(schema, Mapping):
        raise InvalidGenerationRequest(
            "response_format.json_schema.schema must be an object", param="response_format"
        )
    return ResponseFormat("json_schema", name, schema, spec.get("strict"), spec.get("description"))


def response_format_to_openai(fmt: ResponseFormat) -> Json:
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    spec: Json = {"name": fmt.name or "response"}
    for key, value in (
        ("schema", dict(fmt.schema) if fmt.schema is not None else None),
        ("strict", fmt.strict),
        ("description", fmt.description),
    ):
        if value is not None:
            spec[key] = value
    return {"type": "json_schema", "json_schema": spec}


def request_body(
    model: str, messages: Sequence[Message], params: GenerationParams, stream: bool
) -> Json:
    """The chat-completions request both remote clients send (litellm and httpx)."""
    body: Json = {
        "model": model,
        "messages": messages_to_openai(messages),
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stream": stream,
    }
    optional: dict[str, Any] = {
        "stop": list(params.stop) or None,
        "seed": params.seed,
        "tools": [tool_to_openai(t) for t in params.tools] or None,
        "tool_choice": None
        if params.tool_choice is None
        else tool_choice_to_openai(params.tool_choice),
        "parallel_tool_calls": params.parallel_tool_calls,
        "response_format": None
        if params.response_format is None
        else response_format_to_openai(params.response_format),
        "logprobs": True if params.logprobs else None,
        "top_logprobs": params.top_logprobs,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "user": params.user,
        "metadata": dict(params.metadata) if params.metadata is not None else None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


# -- results ----------------------------------------------------------------------------------


def _bytes(value: Any) -> tuple[int, ...] | None:
    return tuple(int(b) for b in value) if isinstance(value, list) else None


def _token_logprob(entry: Mapping[str, Any]) -> TokenLogprob:
    tops = tuple(
        TopLogprob(str(t.get("token", "")), float(t.get("logprob", 0.0)), _bytes(t.get("bytes")))
        for t in entry.get("top_logprobs") or ()
    )
    return TokenLogprob(
        str(entry.get("token", "")),
        float(entry.get("logprob", 0.0)),
        _bytes(entry.get("bytes")),
        tops,
    )


def logprobs_from_openai(data: Mapping[str, Any] | None) -> ChoiceLogprobs | None:
    if not isinstance(data, Mapping):
        return None
    content = tuple(_token_logprob(e) for e in data.get("content") or ())
    refusal_raw = data.get("refusal")
    refusal = None if refusal_raw is None else tuple(_token_logprob(e) for e in refusal_raw)
    if not content and refusal is None:
        return None
    return ChoiceLogprobs(content, refusal)


def _entry_to_openai(e: TokenLogprob | TopLogprob) -> Json:
    return {
        "token": e.token,
        "logprob": e.logprob,
        "bytes": list(e.bytes) if e.bytes is not None else None,
    }


def logprobs_to_openai(lp: ChoiceLogprobs | None) -> Json | None:
    if lp is None:
        return None

    def entries(items: Sequence[TokenLogprob]) -> list[Json]:
        return [
            {**_entry_to_openai(e), "top_logprobs": [_entry_to_openai(t) for t in e.top_logprobs]}
            for e in items
        ]

    return {
        "content": entries(lp.content),
        "refusal": None if lp.refusal is None else entries(lp.refusal),
    }


def tool_call_delta_from_openai(delta: Mapping[str, Any], position: int = 0) -> ToolCallDelta:
    function = delta.get("function") or {}
    index = delta.get("index")
    return ToolCallDelta(
        index if isinstance(index, int) else position,
        delta.get("id") or None,
        function.get("name") or None,
        function.get("arguments") or "",
    )


def tool_call_delta_to_openai(delta: ToolCallDelta) -> Json:
    out: Json = {"index": delta.index}
    function: Json = {"arguments": delta.arguments}
    if delta.id is not None:
        out["id"] = delta.id
        out["type"] = "function"
    if delta.name is not None:
        function["name"] = delta.name
    out["function"] = function
    return out


def finish_reason(raw: str | None) -> str:
    """OpenAI's finish reasons pass through; other providers' words map onto them."""
    if raw in ("length", "max_tokens"):
        return "length"
    if raw in ("tool_calls", "function_call", "tool_use"):
        return "tool_calls"
    if raw == "content_filter":
        return "content_filter"
    return "stop"
