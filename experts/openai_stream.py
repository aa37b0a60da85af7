"""Reading an upstream's chat answer (one JSON body or a stream of chunks) into Completion /
StreamChunk, and writing ours back in OpenAI's shape: the part both remote clients share.

A stream is translated chunk by chunk (`StreamTranslator.feed`) while it accumulates what the
final chunk reports (text for counting, finish reason, usage). Upstream `{"error": ...}` events
and broken streams become typed errors: before the first chunk the upstream's own kind (so the
router may fall back), after it UpstreamStreamError (so the client's stream ends with an error
event, never with a normal finish).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from experts.base import Completion, StreamChunk
from experts.errors import (
    ContextWindowExceeded,
    ExpertError,
    ExpertOverloaded,
    UpstreamStreamError,
)
from experts.openai_wire import (
    Json,
    finish_reason,
    logprobs_from_openai,
    logprobs_to_openai,
    tool_call_delta_from_openai,
    tool_call_delta_to_openai,
    tool_call_from_openai,
    tool_call_to_openai,
)

# (prompt_tokens, completion_tokens) from the upstream's usage, None where it said nothing.
Usage = tuple[int | None, int | None]
# Counts the tokens of text the upstream did not count itself: (prompt, completion) for `text`.
Counter = Callable[[str], tuple[int, int]]


def usage_of(data: Mapping[str, Any] | None) -> Usage | None:
    if not isinstance(data, Mapping):
        return None
    prompt, completion = data.get("prompt_tokens"), data.get("completion_tokens")
    return (
        int(prompt) if isinstance(prompt, int) else None,
        int(completion) if isinstance(completion, int) else None,
    )


def _exact(usage: Usage | None, counted_text: str, count: Counter) -> tuple[int, int]:
    prompt, completion = usage or (None, None)
    if prompt is None or completion is None:
        fallback = count(counted_text)
        prompt = fallback[0] if prompt is None else prompt
        completion = fallback[1] if completion is None else completion
    return prompt, completion


def completion_from_openai(data: Mapping[str, Any], count: Counter) -> Completion:
    """A non-streamed chat.completion body as a Completion (usage counted only if absent)."""
    if data.get("error"):
        raise error_from_event(data["error"], started=False)
    choices = data.get("choices") or []
    if not choices:
        raise UpstreamStreamError("the upstream answered without choices")
    choice = choices[0]
    message = choice.get("message") or {}
    text = message.get("content") or ""
    calls = tuple(tool_call_from_openai(c) for c in message.get("tool_calls") or ())
    counted = text + "".join(c.name + c.arguments for c in calls)
    prompt, completion = _exact(usage_of(data.get("usage")), counted, count)
    return Completion(
        text,
        prompt,
        completion,
        finish_reason(choice.get("finish_reason")),
        tool_calls=calls,
        refusal=_refusal(message),
        logprobs=logprobs_from_openai(choice.get("logprobs")),
    )


def _refusal(message: Mapping[str, Any]) -> str | None:
    # litellm moves fields its types lack (refusal, for OpenAI-compatible servers) here.
    extra = message.get("provider_specific_fields") or {}
    return message.get("refusal") or extra.get("refusal") or None


def error_from_event(error: Any, *, started: bool) -> ExpertError:
    """An upstream's `{"error": {...}}` as the experts' error (see the module docstring)."""
    detail = error if isinstance(error, Mapping) else {"message": str(error)}
    message = str(detail.get("message") or "upstream error")
    code, kind = str(detail.get("code") or ""), str(detail.get("type") or "")
    text = f"upstream error event: {message}" + (f" ({kind or code})" if kind or code else "")
    if started:
        return UpstreamStreamError(text)
    if code == "context_length_exceeded":
        return ContextWindowExceeded(text, param="messages")
    if "rate_limit" in kind or code in ("429", "rate_limit_exceeded"):
        return ExpertOverloaded(text)
    return UpstreamStreamError(text)


class StreamTranslator:
    """Turns OpenAI-shaped stream chunks (dicts) into StreamChunks; one per stream."""

    def __init__(self) -> None:
        self.started = False  # a chunk reached the caller: errors now end the stream
        self._counted: list[str] = []
        self._finish: str | None = None
        self._usage: Usage | None = None

    def feed(self, event: Mapping[str, Any]) -> StreamChunk | None:
        """The chunk to yield for this event, or None if it carries nothing for the client."""
        if event.get("error"):
            raise error_from_event(event["error"], started=self.started)
        self._usage = usage_of(event.get("usage")) or self._usage
        choices = event.get("choices") or []
        if not choices:
            return None
        choice = choices[0]
        self._finish = choice.get("finish_reason") or self._finish
        delta = choice.get("delta") or {}
        calls = tuple(
            tool_call_delta_from_openai(d, i) for i, d in enumerate(delta.get("tool_calls") or ())
        )
        chunk = StreamChunk(
            delta.get("content") or "",
            tool_calls=calls,
            refusal=_refusal(delta),
            logprobs=logprobs_from_openai(choice.get("logprobs")),
        )
        if chunk.is_empty:
            return None
        self._counted.append(chunk.text + "".join((d.name or "") + d.arguments for d in calls))
        self.started = True
        return chunk

    def failure(self, error: ExpertError) -> ExpertError:
        """What to raise for a failure of the stream itself (transport, parse, timeout)."""
        if not self.started:
            return error
        return UpstreamStreamError(f"the upstream stream broke off: {error.message}")

    def final(self, count: Counter) -> StreamChunk:
        """The closing chunk: finish reason and exact usage. A stream that ended without a
        finish reason was cut off, which is an error, not a normal finish."""
        if self._finish is None:
            raise UpstreamStreamError("the upstream stream ended without a finish_reason")
        prompt, completion = _exact(self._usage, "".join(self._counted), count)
        return StreamChunk("", finish_reason(self._finish), prompt, completion)


# -- our answers in OpenAI's shape (for the router's responses) ------------------------------


def assistant_message_to_openai(c: Completion) -> Json:
    """`choices[0].message` of a chat.completion: content is null when the answer is only tool
    calls or a refusal, as OpenAI sends it."""
    message: Json = {
        "role": "assistant",
        "content": c.text if c.text or not (c.tool_calls or c.refusal) else None,
        "refusal": c.refusal,
    }
    if c.tool_calls:
        message["tool_calls"] = [tool_call_to_openai(t) for t in c.tool_calls]
    return message


def choice_logprobs_to_openai(c: Completion | StreamChunk) -> Json | None:
    return logprobs_to_openai(c.logprobs)


def delta_to_openai(chunk: StreamChunk) -> Json:
    """`choices[0].delta` of a chat.completion.chunk for one StreamChunk."""
    delta: Json = {}
    if chunk.text:
        delta["content"] = chunk.text
    if chunk.refusal:
        delta["refusal"] = chunk.refusal
    if chunk.tool_calls:
        delta["tool_calls"] = [tool_call_delta_to_openai(d) for d in chunk.tool_calls]
    return delta
