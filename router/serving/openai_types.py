"""The OpenAI chat-completions request: validated here, converted once into the experts'
contract (experts.base, through experts.openai_wire, so one parser reads OpenAI's JSON).

Every field OpenAI defines that changes the answer is either validated and passed on (tools,
tool_choice, response_format, logprobs, penalties, seed, stop, user, metadata, tool turns,
image parts) or refused by the route (router.serving.http.chat.UNSUPPORTED): nothing a client
asked for is silently dropped. Unknown fields that change nothing (store, service_tier, ...) are
accepted and ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from experts.base import GenerationParams, Message
from experts.needs import requirements
from experts.openai_wire import (
    message_from_openai,
    response_format_from_openai,
    tool_choice_from_openai,
    tools_from_openai,
)
from router.errors import InvalidRequest

ROLES = ("system", "developer", "user", "assistant", "tool")
NAME = r"^[A-Za-z0-9_-]{1,64}$"  # OpenAI's rule for function and schema names
# Integer bounds, so no client number overflows what it feeds (a Redis 64-bit counter, an
# engine's int32): no expert here has a window near a million tokens.
MAX_TOKENS = 1_000_000
INT64 = 2**63 - 1


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ImageURL(_Open):
    url: str = Field(..., min_length=1, description="An http(s) URL or a data: URL.")
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(_Open):
    """A text or image_url part; other part types (input_audio, file) are carried verbatim to
    experts that take them."""

    type: str = Field(..., min_length=1)
    text: str | None = None
    image_url: ImageURL | str | None = None

    @model_validator(mode="after")
    def _fields_of_type(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs `text`")
        if self.type == "image_url" and self.image_url is None:
            raise ValueError("an image_url part needs `image_url`")
        return self


class FunctionCall(_Open):
    name: str = Field(..., min_length=1)
    arguments: str = ""


class MessageToolCall(_Open):
    id: str = Field(..., min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(None, max_length=256)
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _tool_fields(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs `tool_call_id`")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry `tool_calls`")
        return self

    def text(self) -> str:
        """The text of the message: text parts joined (images and other parts add nothing)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")

    def has_content(self) -> bool:
        """Non-blank text, or any non-text part (an image alone is a question too)."""
        if isinstance(self.content, list) and any(p.type != "text" for p in self.content):
            return True
        return bool(self.text().strip())


class StreamOptions(_Open):
    include_usage: bool = False


class FunctionDef(_Open):
    name: str = Field(..., pattern=NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="A JSON Schema object.")
    strict: bool | None = None


class ToolDef(_Open):
    type: Literal["function"] = Field(..., description="Only function tools are supported.")
    function: FunctionDef


class ToolName(_Open):
    name: str = Field(..., pattern=NAME)


class NamedToolChoice(_Open):
    type: Literal["function"]
    function: ToolName


class TextFormat(_Open):
    type: Literal["text"]


class JsonObjectFormat(_Open):
    type: Literal["json_object"]


class JsonSchemaSpec(_Open):
    name: str = Field(..., pattern=NAME)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class JsonSchemaFormat(_Open):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[ChatMessage] = Field(..., min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-INT64 - 1, le=INT64)
    user: str | None = Field(None, max_length=256)
    n: int = Field(1, ge=1, le=1)
    tools: list[ToolDef] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata_keys(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None and any(len(k) > 64 for k in v):
            raise ValueError("metadata keys are at most 64 characters")
        return v

    def check_consistent(self) -> None:
        """Cross-field rules, as 400s naming the field (a model validator could not)."""
        names = [t.function.name for t in self.tools or ()]
        if self.tool_choice not in (None, "none", "auto") and not names:
            raise InvalidRequest("tool_choice needs `tools`", param="tool_choice")
        choice = self.tool_choice
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise InvalidRequest(
                f"tool_choice names '{choice.function.name}', which is not in `tools`",
                param="tool_choice",
            )
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidRequest("top_logprobs needs `logprobs: true`", param="top_logprobs")

    def stop_tuple(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def to_messages(self) -> list[Message]:
        """The messages in the experts' contract (converted once per request)."""
        return self._messages

    @cached_property
    def _messages(self) -> list[Message]:
        return [
            message_from_openai(m.model_dump(exclude_none=True, by_alias=True), i)
            for i, m in enumerate(self.messages)
        ]

    def last_user_text(self) -> str:
        return next((m.text() for m in reversed(self.messages) if m.role == "user"), "")

    def routing_text(self) -> str:
        """What the classifier reads."""
        return self.last_user_text()

    def max_tokens_or(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default

    def params(self, default_max_tokens: int) -> GenerationParams:
        base = self._params
        max_tokens = self.max_tokens_or(default_max_tokens)
        return (
            base
            if base.max_tokens == max_tokens
            else dataclasses.replace(base, max_tokens=max_tokens)
        )

    def needs(self) -> frozenset[str]:
        """The capabilities an expert needs to honour this request (experts.needs)."""
        return self._needs

    @cached_property
    def _needs(self) -> frozenset[str]:
        return requirements(self.to_messages(), self._params)

    @cached_property
    def _params(self) -> GenerationParams:
        return self._generation_params()

    def _generation_params(self) -> GenerationParams:
        wired = {"tools", "tool_choice", "response_format"}
        dumped = (
            self.model_dump(include=wired, exclude_none=True, by_alias=True)
            if self.tools or self.tool_choice or self.response_format
            else {}
        )
        return GenerationParams(
            max_tokens=self.max_tokens_or(256),
            temperature=self.temperature,
            top_p=self.top_p,
            stop=self.stop_tuple(),
            seed=self.seed,
            tools=tools_from_openai(dumped.get("tools")),
            tool_choice=tool_choice_from_openai(dumped.get("tool_choice")),
            parallel_tool_calls=self.parallel_tool_calls,
            response_format=response_format_from_openai(dumped.get("response_format")),
            logprobs=bool(self.logprobs),
            top_logprobs=self.top_logprobs,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            user=self.user,
            metadata=self.metadata,
        )
