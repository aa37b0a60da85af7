"""A deterministic backend shipped as a test double (and for load tests without models)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from experts.base import Backend, Completion, GenerationParams, Message, ModelInfo, StreamChunk
from experts.errors import ContextWindowExceeded, ExpertUnavailable


def _words(text: str) -> list[str]:
    return text.split()


class FakeBackend(Backend):
    """Replies with `reply` or echoes the last user message; one word is one token.

    `delay_ms` is spent before the first token, `fail` injects errors for fallback tests.
    """

    def __init__(
        self,
        name: str = "fake",
        *,
        reply: str | None = None,
        delay_ms: float = 0.0,
        fail: str = "never",
        context_window: int = 4096,
    ) -> None:
        self.name = name
        self.reply = reply
        self.delay_ms = delay_ms
        self.fail = fail
        self._context_window = context_window
        self.calls = 0

    def _answer(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> tuple[list[str], str]:
        last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
        text = self.reply if self.reply is not None else f"[{self.name}] {last_user}"
        for s in params.stop:
            if s and s in text:
                text = text[: text.index(s)]
                words = _words(text)
                return words[: params.max_tokens], "stop"
        words = _words(text)
        if len(words) > params.max_tokens:
            return words[: params.max_tokens], "length"
        return words, "stop"

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return sum(len(_words(m.content)) + 1 for m in messages)

    async def _before_first_token(self, messages: Sequence[Message]) -> None:
        self.calls += 1
        used, window = self.count_prompt_tokens(messages), self._context_window
        if used > window:
            raise ContextWindowExceeded(
                f"prompt is {used} tokens; expert '{self.name}' takes at most {window}",
                param="messages",
            )
        if self.delay_ms:
            await asyncio.sleep(self.delay_ms / 1000)
        if self.fail == "always":
            raise ExpertUnavailable(f"fake expert '{self.name}' is configured to fail")

    async def generate(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        await self._before_first_token(messages)
        words, finish = self._answer(messages, params)
        return Completion(" ".join(words), self.count_prompt_tokens(messages), len(words), finish)

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[StreamChunk]:
        await self._before_first_token(messages)
        words, finish = self._answer(messages, params)
        for i, word in enumerate(words):
            if i == 1 and self.fail == "after_first_token":
                raise ExpertUnavailable(f"fake expert '{self.name}' failed mid-stream")
            yield StreamChunk(word if i == 0 else " " + word)
        yield StreamChunk("", finish, self.count_prompt_tokens(messages), len(words))

    def info(self) -> ModelInfo:
        return ModelInfo("fake", self.name, self._context_window, {"deterministic": True})
