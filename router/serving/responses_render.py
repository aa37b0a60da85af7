"""Our answers in the Responses API's shape: the `response` object and its streaming events
(response.created ... response.completed), so `client.responses.create` and the openai SDK's
`responses.stream` helper read them as they read OpenAI's."""

from __future__ import annotations

import time
import uuid
from typing import Any

from experts.base import ChoiceLogprobs, Completion, StreamChunk, ToolCall
from experts.openai_wire import logprobs_to_openai
from router.serving.openai_render import sse
from router.serving.responses_types import ResponsesRequest

Json = dict[str, Any]


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _logprobs(lp: ChoiceLogprobs | None) -> list[Json]:
    rendered = logprobs_to_openai(lp)
    return list(rendered["content"]) if rendered else []


def usage(prompt: int, completion: int) -> Json:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def message_item(item_id: str, text: str, refusal: str | None, logprobs: list[Json]) -> Json:
    part: Json = (
        {"type": "refusal", "refusal": refusal}
        if refusal and not text
        else {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}
    )
    return {
        "type": "message",
        "id": item_id,
        "status": "completed",
        "role": "assistant",
        "content": [part],
    }


def call_item(item_id: str, call: ToolCall, status: str = "completed") -> Json:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    }


def _status(finish_reason: str) -> tuple[str, Json | None]:
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


class ResponsesRender:
    """Writes one request's answer (body or stream) with the request's own settings echoed."""

    def __init__(self, req: ResponsesRequest) -> None:
        self.req = req
        self.id = _id("resp")
        self.created = int(time.time())

    def response(
        self,
        model: str,
        status: str,
        output: list[Json],
        usage_: Json | None = None,
        incomplete: Json | None = None,
        error: Json | None = None,
    ) -> Json:
        req = self.req
        fmt = req.text.format if req.text is not None else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "error": error,
            "incomplete_details": incomplete,
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "metadata": req.metadata or {},
            "model": model,
            "output": output,
            "parallel_tool_calls": req.parallel_tool_calls is not False,
            "previous_response_id": None,
            "reasoning": None,
            "store": False,  # nothing is stored: there is no GET /v1/responses/{id}
            "temperature": req.temperature if req.temperature is not None else 1.0,
            "text": {
                "format": fmt.model_dump(by_alias=True, exclude_none=True)
                if fmt
                else {"type": "text"}
            },
            "tool_choice": req.model_dump(mode="json", exclude_none=True).get(
                "tool_choice", "auto"
            ),
            "tools": [t.model_dump(by_alias=True, exclude_none=True) for t in req.tools or ()],
            "top_p": req.top_p if req.top_p is not None else 1.0,
            "truncation": req.truncation or "disabled",
            "usage": usage_,
            "user": req.user,
        }

    def body(self, expert: str, c: Completion) -> Json:
        output: list[Json] = []
        if c.text or c.refusal or not c.tool_calls:
            output.append(message_item(_id("msg"), c.text, c.refusal, _logprobs(c.logprobs)))
        output.extend(call_item(_id("fc"), call) for call in c.tool_calls)
        status, incomplete = _status(c.finish_reason)
        return self.response(
            expert, status, output, usage(c.prompt_tokens, c.completion_tokens), incomplete
        )

    def writer(self, expert: str) -> ResponsesStreamWriter:
        return ResponsesStreamWriter(self, expert)


class ResponsesStreamWriter:
    """The Responses API's events for one stream. Items open as their first piece arrives
    (the message on text or a refusal, a function_call per tool-call index) and close, in
    output order, when the stream finishes."""

    def __init__(self, render: ResponsesRender, model: str) -> None:
        self.render, self.model = render, model
        self.seq = 0
        self.items: list[Json] = []  # output items, in output order (mutated while streaming)
        self.message: Json | None = None
        self.calls: dict[int, Json] = {}  # tool-call index -> its function_call item

    def _event(self, kind: str, **fields: Any) -> bytes:
        doc = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return sse(doc, event=kind)

    def start(self) -> list[bytes]:
        snapshot = self.render.response(self.model, "in_progress", [])
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def _open(self, item: Json) -> bytes:
        self.items.append(item)
        return self._event(
            "response.output_item.added", output_index=len(self.items) - 1, item=dict(item)
        )

    def piece(self, chunk: StreamChunk) -> list[bytes]:
        out: list[bytes] = []
        if chunk.text or chunk.refusal:
            out += self._message_piece(chunk)
        for delta in chunk.tool_calls:
            call = self.calls.get(delta.index)
            if call is None:
                call = call_item(
                    _id("fc"), ToolCall(delta.id or "", delta.name or "", ""), "in_progress"
                )
                self.calls[delta.index] = call
                out.append(self._open(call))
            if delta.arguments:
                call["arguments"] += delta.arguments
                out.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        item_id=call["id"],
                        output_index=self.items.index(call),
                        delta=delta.arguments,
                    )
                )
        return out

    def _ensure_part(self, kind: str) -> list[bytes]:
        """Open the message item and a content part of `kind` where none is open yet."""
        out: list[bytes] = []
        if self.message is None:
            self.message = {**message_item(_id("msg"), "", None, []), "status": "in_progress"}
            self.message["content"] = []
            out.append(self._open(self.message))
        content = self.message["content"]
        if not content or content[-1]["type"] != kind:
            part: Json = (
                {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                if kind == "output_text"
                else {"type": "refusal", "refusal": ""}
            )
            content.append(part)
            out.append(self._part_event("response.content_part.added", part))
        return out

    def _message_piece(self, chunk: StreamChunk) -> list[bytes]:
        kind = "output_text" if chunk.text else "refusal"
        out = self._ensure_part(kind)
        assert self.message is not None
        content = self.message["content"]
        part = content[-1]
        where = self._where(self.message, len(content) - 1)
        if kind == "output_text":
            lp = _logprobs(chunk.logprobs)
            part["text"] += chunk.text
            part["logprobs"] += lp
            out.append(
                self._event("response.output_text.delta", **where, delta=chunk.text, logprobs=lp)
            )
        else:
            part["refusal"] += chunk.refusal or ""
            out.append(self._event("response.refusal.delta", **where, delta=chunk.refusal))
        return out

    def _where(self, item: Json, content_index: int) -> Json:
        return {
            "item_id": item["id"],
            "output_index": self.items.index(item),
            "content_index": content_index,
        }

    def _part_event(self, kind: str, part: Json) -> bytes:
        assert self.message is not None
        where = self._where(self.message, self.message["content"].index(part))
        return self._event(kind, **where, part=dict(part))

    def _close_items(self) -> list[bytes]:
        out: list[bytes] = []
        for index, item in enumerate(self.items):
            item["status"] = "completed"
            if item is self.message:
                for part in item["content"]:
                    where = self._where(item, item["content"].index(part))
                    if part["type"] == "output_text":
                        out.append(
                            self._event(
                                "response.output_text.done",
                                **where,
                                text=part["text"],
                                logprobs=part["logprobs"],
                            )
                        )
                    else:
                        out.append(
                            self._event("response.refusal.done", **where, refusal=part["refusal"])
                        )
                    out.append(self._part_event("response.content_part.done", part))
            else:
                out.append(
                    self._event(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=index,
                        name=item["name"],
                        arguments=item["arguments"],
                    )
                )
            out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out

    def finish(self, finish_reason: str, prompt: int, completion: int) -> list[bytes]:
        # An empty answer is still one (empty) message, as OpenAI's is.
        out = [] if self.items else self._ensure_part("output_text")
        out += self._close_items()
        status, incomplete = _status(finish_reason)
        final = self.render.response(
            self.model, status, self.items, usage(prompt, completion), incomplete
        )
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self._event(kind, response=final))
        return out

    def failed(self, error_body: Json) -> list[bytes]:
        err = error_body.get("error", {})
        error = {"code": err.get("code") or "server_error", "message": err.get("message", "")}
        final = self.render.response(self.model, "failed", self.items, None, None, error)
        return [
            self._event("error", code=error["code"], message=error["message"], param=None),
            self._event("response.failed", response=final),
        ]
