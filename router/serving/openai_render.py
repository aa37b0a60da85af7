"""Our chat answers in OpenAI's shape: chat.completion bodies and chat.completion.chunk events,
with tool calls, refusals and logprobs written by the experts' own writers (experts.openai_stream),
so what an upstream said reaches the client as it said it."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from experts.base import Completion, StreamChunk
from experts.openai_stream import assistant_message_to_openai, delta_to_openai
from experts.openai_wire import logprobs_to_openai


def sse(obj: Mapping[str, Any] | str, event: str | None = None) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage_dict(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_body(
    req_id: str, model: str, c: Completion, created: int | None = None
) -> dict[str, Any]:
    return {
        "id": req_id,
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": assistant_message_to_openai(c),
                "logprobs": logprobs_to_openai(c.logprobs),
                "finish_reason": c.finish_reason,
            }
        ],
        "usage": usage_dict(c.prompt_tokens, c.completion_tokens),
    }


def chunk_body(
    req_id: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
    return _chunk(req_id, model, created, [choice])


def piece_body(req_id: str, model: str, created: int, chunk: StreamChunk) -> dict[str, Any]:
    """One streamed piece: text, refusal, tool-call deltas and their logprobs."""
    return chunk_body(
        req_id, model, created, delta_to_openai(chunk), logprobs=logprobs_to_openai(chunk.logprobs)
    )


def usage_chunk_body(
    req_id: str, model: str, created: int, prompt: int, completion: int
) -> dict[str, Any]:
    return {**_chunk(req_id, model, created, []), "usage": usage_dict(prompt, completion)}


def _chunk(req_id: str, model: str, created: int, choices: list[Any]) -> dict[str, Any]:
    return {
        "id": req_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    }


class ChatRender:
    """chat.completion bodies and chat.completion.chunk streams (the Gateway's default)."""

    def __init__(self, include_usage: bool = False, completion_id: str | None = None) -> None:
        self.include_usage = include_usage
        self.completion_id = completion_id  # the Gateway's: "chatcmpl-<request id>"

    def body(self, expert: str, c: Completion) -> dict[str, Any]:
        return completion_body(self.completion_id or new_id(), expert, c)

    def writer(self, expert: str) -> ChatStreamWriter:
        return ChatStreamWriter(expert, self.include_usage, self.completion_id)


class ChatStreamWriter:
    """The SSE events of one chat stream, in order: start, pieces, then finish or failed."""

    def __init__(self, model: str, include_usage: bool, completion_id: str | None = None) -> None:
        self.rid, self.created, self.model = completion_id or new_id(), int(time.time()), model
        self.include_usage = include_usage

    def start(self) -> list[bytes]:
        delta = {"role": "assistant", "content": ""}
        return [sse(chunk_body(self.rid, self.model, self.created, delta))]

    def piece(self, chunk: StreamChunk) -> list[bytes]:
        return [sse(piece_body(self.rid, self.model, self.created, chunk))]

    def failed(self, error_body: dict[str, Any]) -> list[bytes]:
        return [sse(error_body), sse("[DONE]")]

    def finish(self, finish_reason: str, prompt: int, completion: int) -> list[bytes]:
        out = [sse(chunk_body(self.rid, self.model, self.created, {}, finish_reason))]
        if self.include_usage:
            out.append(
                sse(usage_chunk_body(self.rid, self.model, self.created, prompt, completion))
            )
        out.append(sse("[DONE]"))
        return out
