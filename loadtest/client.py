"""Send one chat completion over httpx and turn what happened into a RequestRecord."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from loadtest.records import RequestRecord

EXPERT_HEADER = "x-slm-router-expert"
DOMAIN_HEADER = "x-slm-router-domain"


def classify_exception(exc: BaseException) -> str:
    """Foreign errors become one of a few stable error types at this edge."""
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "timeout"
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
        return "connection"
    if isinstance(exc, json.JSONDecodeError | ValueError | KeyError | TypeError):
        return "bad_response"
    return "other:" + type(exc).__name__


def _usage(obj: Any) -> tuple[int, int]:
    usage = obj.get("usage") if isinstance(obj, dict) else None
    if not isinstance(usage, dict):
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


@dataclass
class _StreamState:
    ttft: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    done: bool = False
    error: str | None = None


def _has_content(chunk: dict[str, Any]) -> bool:
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls"):
            return True
    return False


def _consume_sse_line(line: str, state: _StreamState, t0: float) -> None:
    if not line.startswith("data:"):
        return
    data = line[5:].strip()
    if data == "[DONE]":
        state.done = True
        return
    chunk = json.loads(data)
    if "error" in chunk:
        state.error = "stream_error"
        return
    if state.ttft is None and _has_content(chunk):
        state.ttft = time.perf_counter() - t0
    p, c = _usage(chunk)
    if p or c:
        state.prompt_tokens, state.completion_tokens = p, c


class ChatClient:
    """Posts to {base}/v1/chat/completions; never raises, always returns a record."""

    def __init__(
        self, client: httpx.AsyncClient, base_url: str, run_t0: float, timeout_s: float
    ) -> None:
        self._client = client
        self._url = base_url + "/v1/chat/completions"
        self._run_t0 = run_t0
        self._timeout_s = timeout_s

    async def send(self, body: dict[str, Any], workload_domain: str | None) -> RequestRecord:
        t0 = time.perf_counter()
        try:
            # httpx bounds each read; this bounds the whole request, trickling streams too.
            async with asyncio.timeout(self._timeout_s):
                if body.get("stream"):
                    fields = await self._send_stream(body, t0)
                else:
                    fields = await self._send_plain(body)
        except Exception as exc:  # any failure is data for the report, not a crash
            fields = {"status": None, "error": classify_exception(exc)}
        return RequestRecord(
            start_s=t0 - self._run_t0,
            latency_s=time.perf_counter() - t0,
            workload_domain=workload_domain,
            **fields,
        )

    @staticmethod
    def _headers(resp: httpx.Response) -> dict[str, Any]:
        return {
            "status": resp.status_code,
            "expert": resp.headers.get(EXPERT_HEADER),
            "domain": resp.headers.get(DOMAIN_HEADER),
        }

    async def _send_plain(self, body: dict[str, Any]) -> dict[str, Any]:
        resp = await self._client.post(self._url, json=body)
        fields = self._headers(resp)
        if resp.status_code >= 400:
            return {**fields, "error": f"http_{resp.status_code}"}
        p, c = _usage(resp.json())
        return {**fields, "error": None, "prompt_tokens": p, "completion_tokens": c}

    async def _send_stream(self, body: dict[str, Any], t0: float) -> dict[str, Any]:
        async with self._client.stream("POST", self._url, json=body) as resp:
            fields = self._headers(resp)
            if resp.status_code >= 400:
                await resp.aread()
                return {**fields, "error": f"http_{resp.status_code}"}
            state = _StreamState()
            async for line in resp.aiter_lines():
                _consume_sse_line(line, state, t0)
                if state.error:
                    break
        error = state.error or (None if state.done else "stream_incomplete")
        return {
            **fields,
            "error": error,
            "ttft_s": state.ttft,
            "prompt_tokens": state.prompt_tokens,
            "completion_tokens": state.completion_tokens,
        }
