"""The one small interface every expert backend implements."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant" | "tool"
    content: str


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # LoRA adapter (or other per-request variant) to run; None means the base model.
    adapter: str | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"


@dataclass(frozen=True)
class StreamChunk:
    """One streamed piece. The last chunk carries finish_reason and the token counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What /v1/models reports about a backend."""

    backend: str
    model: str
    context_window: int
    metadata: dict[str, Any] = field(default_factory=dict)


class Backend(abc.ABC):
    """A model that answers chat requests. Implementations must be safe to call concurrently."""

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

    @property
    def context_window(self) -> int:
        return self.info().context_window

    async def health(self) -> bool:
        return True

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources (HTTP clients, GPU memory)."""
