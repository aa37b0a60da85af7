"""A deterministic backend shipped as a test double (and for load tests without models)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from experts.base import (
    Backend,
    ChoiceLogprobs,
    Completion,
    GenerationParams,
    Message,
    ModelInfo,
    NamedToolChoice,
    StreamChunk,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
)
from experts.capabilities import Capabilities
from experts.errors import ContextWindowExceeded, ExpertUnavailable, UnsupportedCapability
from experts.needs import requirements


def _words(text: str) -> list[str]:
    return text.split()


@dataclass(frozen=True)
class _Answer:
    words: list[str]
    finish: str
    call: ToolCall | None = None


class FakeBackend(Backend):
    """Replies with `reply` or echoes the last user message; one word is one token.

    `delay_ms` is spent before the first token, `fail` injects errors for fallback tests. It does
    plain chat; given more capabilities (the YAML's `capabilities:` block) it fakes them
    deterministically: tools -> a call of the named (else first) tool with the last user message
    as `{"text": ...}`; json_object / json_schema -> `{"reply": <text>}`; logprobs -> 0.0 per
    word. A request needing what it was not given raises UnsupportedCapability.
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

    def derived_capabilities(self) -> Capabilities:
        return Capabilities(context_window=self._context_window, source="fake")

    def _answer(self, messages: Sequence[Message], params: GenerationParams) -> _Answer:
        last_user = next((m.text for m in reversed(messages) if m.role == "user"), "")
        if params.wants_tools:
            return _Answer([], "tool_calls", _tool_call(params, last_user))
        text = self.reply if self.reply is not None else f"[{self.name}] {last_user}"
        if params.json_mode:
            text = json.dumps({"reply": text})
        for s in params.stop:
            if s and s in text:
                text = text[: text.index(s)]
                return _Answer(_words(text)[: params.max_tokens], "stop")
        words = _words(text)
        if len(words) > params.max_tokens:
            return _Answer(words[: params.max_tokens], "length")
        return _Answer(words, "stop")

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return sum(len(_words(m.text)) + 1 for m in messages)

    async def _before_first_token(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> None:
        self.calls += 1
        missing = self.capabilities().missing(requirements(messages, params))
        if missing:
            raise UnsupportedCapability(
                f"fake expert '{self.name}' cannot do: {', '.join(missing)}"
            )
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
        await self._before_first_token(messages, params)
        answer = self._answer(messages, params)
        return Completion(
            " ".join(answer.words),
            self.count_prompt_tokens(messages),
            _tokens(answer),
            answer.finish,
            tool_calls=(answer.call,) if answer.call else (),
            logprobs=_logprobs(answer.words) if params.logprobs else None,
        )

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[StreamChunk]:
        await self._before_first_token(messages, params)
        answer = self._answer(messages, params)
        if answer.call is not None:
            call = answer.call
            yield StreamChunk("", tool_calls=(ToolCallDelta(0, call.id, call.name),))
            yield StreamChunk("", tool_calls=(ToolCallDelta(0, arguments=call.arguments),))
        for i, word in enumerate(answer.words):
            if i == 1 and self.fail == "after_first_token":
                raise ExpertUnavailable(f"fake expert '{self.name}' failed mid-stream")
            piece = word if i == 0 else " " + word
            logprobs = _logprobs([piece]) if params.logprobs else None
            yield StreamChunk(piece, logprobs=logprobs)
        yield StreamChunk("", answer.finish, self.count_prompt_tokens(messages), _tokens(answer))

    def info(self) -> ModelInfo:
        return ModelInfo(
            "fake", self.name, self._context_window, {"deterministic": True}, self.capabilities()
        )


def _tool_call(params: GenerationParams, text: str) -> ToolCall:
    choice = params.tool_choice
    name = choice.name if isinstance(choice, NamedToolChoice) else params.tools[0].name
    return ToolCall("call_fake_0", name, json.dumps({"text": text}))


def _tokens(answer: _Answer) -> int:
    return len(answer.words) + (len(_words(answer.call.arguments)) if answer.call else 0)


def _logprobs(words: list[str]) -> ChoiceLogprobs:
    # Every word is certain: the double has no distribution.
    return ChoiceLogprobs(tuple(TokenLogprob(w, 0.0, tuple(w.encode())) for w in words))
