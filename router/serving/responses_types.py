"""POST /v1/responses, the request: validated, then turned into the chat request it means, so it
takes the same routing path (RouterService.route) and the same experts as chat.

Served: text or item input (messages with input_text / input_image parts, function_call and
function_call_output items), instructions, function tools and tool_choice, text.format (JSON
modes), max_output_tokens, sampling, logprobs, user, metadata, streaming. Refused with a 400
that names the field: what needs OpenAI's server-side state or hosted tools
(previous_response_id, conversation, background, prompt templates, web/file search, ...).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router.errors import InvalidRequest
from router.serving.openai_types import MAX_TOKENS, NAME, ChatCompletionRequest

LOGPROBS_INCLUDE = "message.output_text.logprobs"
# Fields that need what a gateway in front of stateless experts does not have.
STATEFUL = {
    "previous_response_id": "the gateway stores no responses: send the conversation in `input`",
    "conversation": "the gateway stores no conversations: send the conversation in `input`",
    "background": "background responses are not supported",
    "prompt": "stored prompt templates are not supported: send `instructions` and `input`",
    "reasoning": "reasoning options are not supported by these experts",
}

# Where a chat field came from, for errors found once the request is a chat request.
CHAT_TO_RESPONSES = {
    "messages": "input",
    "max_tokens": "max_output_tokens",
    "response_format": "text.format",
    "logprobs": "top_logprobs",
}


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class FunctionTool(_Open):
    type: str = Field(..., description="Only 'function' tools are supported.")
    name: str | None = Field(None, pattern=NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(_Open):
    type: Literal["function"]
    name: str = Field(..., pattern=NAME)


class TextFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, pattern=NAME)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextConfig(_Open):
    format: TextFormat | None = None


class InputItem(_Open):
    """A message (`role` + `content`), a function_call or a function_call_output item."""

    type: str | None = None
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[dict[str, Any]] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[dict[str, Any]] | None = None


class ResponsesRequest(_Open):
    model: str | None = None
    input: str | list[InputItem] = Field(..., description="Text, or a list of input items.")
    instructions: str | None = None
    tools: list[FunctionTool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_logprobs: int | None = Field(None, ge=0, le=20)
    include: list[str] | None = None
    stream: bool = False
    store: bool | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = Field(None, max_length=256)
    metadata: dict[str, str] | None = Field(None, max_length=16)

    def to_chat(self) -> ChatCompletionRequest:
        """The chat request this asks for; raises InvalidRequest naming the Responses field."""
        for name, why in STATEFUL.items():
            if (self.model_extra or {}).get(name) not in (None, {}, ""):
                raise InvalidRequest(f"`{name}` is not supported: {why}", param=name)
        doc: dict[str, Any] = {
            "model": self.model,
            "messages": self._messages(),
            "stream": self.stream,
            "stream_options": {"include_usage": True} if self.stream else None,
            "max_tokens": self.max_output_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "tools": [self._tool(t, i) for i, t in enumerate(self.tools or ())] or None,
            "tool_choice": self._tool_choice(),
            "parallel_tool_calls": self.parallel_tool_calls,
            "response_format": self._response_format(),
            "logprobs": True if self.wants_logprobs() else None,
            "top_logprobs": self.top_logprobs,
            "user": self.user,
            "metadata": self.metadata,
        }
        try:
            return ChatCompletionRequest.model_validate(
                {k: v for k, v in doc.items() if v is not None}
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = tuple(first.get("loc", ())) or ("input",)
            param = CHAT_TO_RESPONSES.get(str(loc[0]), str(loc[0]))
            raise InvalidRequest(f"{param}: {first.get('msg')}", param=param) from None

    def wants_logprobs(self) -> bool:
        return self.top_logprobs is not None or LOGPROBS_INCLUDE in (self.include or ())

    def _messages(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.instructions:
            out.append({"role": "system", "content": self.instructions})
        if isinstance(self.input, str):
            out.append({"role": "user", "content": self.input})
            return out
        for i, item in enumerate(self.input):
            _append(out, item, i)
        return out

    @staticmethod
    def _tool(tool: FunctionTool, i: int) -> dict[str, Any]:
        if tool.type != "function" or tool.name is None:
            raise InvalidRequest(
                f"tools[{i}]: only function tools (type 'function' with a name) are supported; "
                f"'{tool.type}' is an OpenAI-hosted tool",
                param="tools",
            )
        function = tool.model_dump(include={"name", "description", "parameters", "strict"})
        return {
            "type": "function",
            "function": {k: v for k, v in function.items() if v is not None},
        }

    def _tool_choice(self) -> Any:
        choice = self.tool_choice
        if isinstance(choice, NamedFunction):
            return {"type": "function", "function": {"name": choice.name}}
        return choice

    def _response_format(self) -> dict[str, Any] | None:
        fmt = self.text.format if self.text is not None else None
        if fmt is None or fmt.type != "json_schema":
            return None if fmt is None else {"type": fmt.type}
        if fmt.name is None:
            raise InvalidRequest("text.format: json_schema needs a `name`", param="text.format")
        spec: dict[str, Any] = {"name": fmt.name, "description": fmt.description}
        spec.update(schema=fmt.schema_, strict=fmt.strict)
        return {
            "type": "json_schema",
            "json_schema": {k: v for k, v in spec.items() if v is not None},
        }


def _append(out: list[dict[str, Any]], item: InputItem, i: int) -> None:
    kind = item.type or ("message" if item.role else None)
    if kind == "message":
        if item.role is None:
            raise InvalidRequest(f"input[{i}]: a message needs `role`", param="input")
        out.append({"role": item.role, "content": _content(item.content, i)})
    elif kind == "function_call":
        if not (item.call_id and item.name):
            raise InvalidRequest(f"input[{i}]: function_call needs call_id and name", param="input")
        function = {"name": item.name, "arguments": item.arguments or ""}
        call: dict[str, Any] = {"id": item.call_id, "type": "function", "function": function}
        last = out[-1] if out else None
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)  # one assistant turn, several calls
        else:
            out.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        if not item.call_id:
            raise InvalidRequest(f"input[{i}]: function_call_output needs call_id", param="input")
        output = item.output if isinstance(item.output, str) else _text_of(item.output or [], i)
        out.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
    else:
        raise InvalidRequest(
            f"input[{i}]: item type '{kind}' is not supported (messages, function_call and "
            "function_call_output are)",
            param="input",
        )


def _content(content: str | list[dict[str, Any]] | None, i: int) -> Any:
    if content is None or isinstance(content, str):
        return content or ""
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            parts.append({"type": "text", "text": part["refusal"]})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image = {"url": part["image_url"], "detail": part.get("detail")}
            parts.append({"type": "image_url", "image_url": {k: v for k, v in image.items() if v}})
        else:
            raise InvalidRequest(
                f"input[{i}].content[{j}]: part type '{kind}' is not supported (input_text, "
                "output_text and input_image with an image_url are)",
                param="input",
            )
    return parts


def _text_of(parts: list[dict[str, Any]], i: int) -> str:
    content = _content(parts, i)
    return "".join(p.get("text", "") for p in content) if isinstance(content, list) else content
