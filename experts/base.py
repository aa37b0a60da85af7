"""The one small interface every expert backend implements, and the values it exchanges.

Every type is a frozen dataclass that mirrors one OpenAI shape; `experts.openai_wire` converts
them to and from OpenAI's JSON (`*_from_openai` / `*_to_openai`), so what a client sent reaches
the upstream intact and what the upstream said reaches the client intact. New fields all have
defaults: code that builds `Message("user", "hi")` or `GenerationParams(max_tokens=8)` keeps
working and means what it meant before.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from experts.capabilities import Capabilities
from experts.errors import UnsupportedCapability

# -- messages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextPart:
    """`{"type": "text", "text": ...}`"""

    text: str


@dataclass(frozen=True)
class ImagePart:
    """`{"type": "image_url", "image_url": {"url": ..., "detail": ...}}`: an http(s) or data URL."""

    url: str
    detail: str | None = None


@dataclass(frozen=True)
class RawPart:
    """Any other content part (input_audio, file, ...), kept verbatim: `{"type": type, **data}`.

    Backends that do not understand it refuse it; remote clients forward it as it came."""

    type: str
    data: Mapping[str, Any] = field(default_factory=dict)


ContentPart = TextPart | ImagePart | RawPart


@dataclass(frozen=True)
class ToolCall:
    """An assistant's call of a function tool: `{"id", "type": "function", "function": {...}}`.

    `arguments` is the JSON text exactly as the model wrote it (OpenAI does not parse it)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Message:
    """One chat turn. `content` is a plain string (the common case), a tuple of parts (vision,
    mixed text), or None (an assistant turn that only calls tools)."""

    role: str  # "system" | "user" | "assistant" | "tool" ("developer" arrives as "system")
    content: str | tuple[ContentPart, ...] | None = ""
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # assistant turns
    tool_call_id: str | None = None  # tool turns: which call this result answers

    @property
    def text(self) -> str:
        """The text of the message (text parts joined; other parts contribute nothing)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def has_images(self) -> bool:
        return isinstance(self.content, tuple) and any(
            isinstance(p, ImagePart) for p in self.content
        )

    @property
    def has_raw_parts(self) -> bool:
        return isinstance(self.content, tuple) and any(isinstance(p, RawPart) for p in self.content)


# -- request parameters -----------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    """A function tool: `{"type": "function", "function": {"name", "description", "parameters",
    "strict"}}`. `parameters` is a JSON Schema object."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] | None = None
    strict: bool | None = None


@dataclass(frozen=True)
class NamedToolChoice:
    """`tool_choice: {"type": "function", "function": {"name": ...}}`: call exactly this tool."""

    name: str


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


@dataclass(frozen=True)
class ResponseFormat:
    """`response_format`: {"type": "text"}, {"type": "json_object"}, or {"type": "json_schema",
    "json_schema": {"name", "schema", "strict", "description"}} (flattened here)."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema: Mapping[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # LoRA adapter (or other per-request variant) to run; None means the base model.
    adapter: str | None = None
    # OpenAI's optional fields. None / empty means "not sent", so an upstream that does not know
    # a field never sees it unless the client used it.
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None
    metadata: Mapping[str, str] | None = None

    @property
    def wants_tools(self) -> bool:
        """Tools offered and not switched off with tool_choice "none"."""
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def json_mode(self) -> Literal["json_object", "json_schema"] | None:
        rf = self.response_format
        return None if rf is None or rf.type == "text" else rf.type


# -- results ----------------------------------------------------------------------------------

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(frozen=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """One entry of `choices[].logprobs.content`."""

    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class ChoiceLogprobs:
    """`choices[].logprobs`: per-token entries for the content (and the refusal, if any)."""

    content: tuple[TokenLogprob, ...] = ()
    refusal: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # a FinishReason
    tool_calls: tuple[ToolCall, ...] = ()
    refusal: str | None = None
    logprobs: ChoiceLogprobs | None = None


@dataclass(frozen=True)
class ToolCallDelta:
    """A streamed piece of a tool call, as OpenAI streams it: the first delta of call `index`
    carries `id` and `name`, later ones only further `arguments` text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class StreamChunk:
    """One streamed piece. The last chunk carries finish_reason and the token counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    refusal: str | None = None  # a piece of the refusal text
    logprobs: ChoiceLogprobs | None = None  # the entries for this chunk's tokens

    @property
    def is_empty(self) -> bool:
        """Carries nothing a client would see (no text, tool call, refusal or logprobs)."""
        return not (self.text or self.tool_calls or self.refusal or self.logprobs)


# -- embeddings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingParams:
    dimensions: int | None = None  # shorter vectors, where the model supports it
    user: str | None = None


@dataclass(frozen=True)
class Embeddings:
    """One vector per input text, in input order, and the tokens the inputs took (for cost)."""

    vectors: list[list[float]]
    prompt_tokens: int


# -- the backend ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """What /v1/models reports about a backend."""

    backend: str
    model: str
    context_window: int
    metadata: dict[str, Any] = field(default_factory=dict)
    capabilities: Capabilities | None = None


_NO_OVERRIDES: Mapping[str, Any] = MappingProxyType({})


class Backend(abc.ABC):
    """A model that answers chat requests. Implementations must be safe to call concurrently."""

    # What the YAML's `capabilities:` block says, applied over what the backend derives (set by
    # experts.registry.build_backend; values are bools, or an int for context_window).
    capability_overrides: Mapping[str, Any] = _NO_OVERRIDES

    @abc.abstractmethod
    async def generate(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        """Answer in one piece."""

    @abc.abstractmethod
    def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[StreamChunk]:
        """Answer piece by piece; the final chunk has finish_reason and token counts."""

    @abc.abstractmethod
    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens the prompt takes once the chat template is applied."""

    @abc.abstractmethod
    def info(self) -> ModelInfo: ...

    def derived_capabilities(self) -> Capabilities:
        """What this backend can do, as far as it can tell by itself (plain chat by default).
        Must not call `info()` (which reports `capabilities()`)."""
        return Capabilities(source="default")

    def capabilities(self) -> Capabilities:
        """What the router may rely on: derived, then the YAML overrides on top."""
        return self.derived_capabilities().with_overrides(self.capability_overrides)

    async def embed(
        self, texts: Sequence[str], params: EmbeddingParams | None = None
    ) -> Embeddings:
        """Embedding vectors for `texts` (backends whose capabilities say `embeddings`)."""
        raise UnsupportedCapability(f"{type(self).__name__} does not embed", param="model")

    @property
    def context_window(self) -> int:
        return self.info().context_window

    async def health(self) -> bool:
        return True

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources (HTTP clients, GPU memory)."""
