"""A direct httpx client for OpenAI-compatible endpoints (vLLM, llama.cpp, TGI, Ollama's /v1).

litellm is the general path (any provider); this one trades that generality for per-call
overhead: one pooled httpx.AsyncClient, no per-call provider resolution or logging callbacks.
Chosen per expert with `client: httpx` in the YAML, and only with an `api_base`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from experts.base import Completion, GenerationParams, Message, ModelInfo, StreamChunk
from experts.errors import ExpertError, ExpertOverloaded, ExpertTimeout, ExpertUnavailable
from experts.remote import RemoteBackend, _finish, openai_fields, translate_error

_RETRYABLE = (ExpertUnavailable, ExpertTimeout, ExpertOverloaded)


class UpstreamHTTPError(Exception):
    """A non-2xx answer; carries the status for translate_error."""

    def __init__(self, status_code: int, body: str) -> None:
        super().__init__(f"HTTP {status_code}: {body[:300]}")
        self.status_code = status_code


class OpenAIHTTPBackend(RemoteBackend):
    """RemoteBackend speaking the OpenAI wire format itself over a pooled httpx client."""

    _client: Any = None

    def info(self) -> ModelInfo:
        base = super().info()
        return ModelInfo(
            base.backend, base.model, base.context_window, {**base.metadata, "client": "httpx"}
        )

    async def generate(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        body = self._body(messages, params, stream=False)
        data = await self._with_retries(lambda: self._post_json(body))
        choice = data["choices"][0]
        text = (choice.get("message") or {}).get("content") or ""
        prompt, completion = self._usage(_Usage.of(data.get("usage")), messages, text)
        return Completion(text, prompt, completion, _finish(choice.get("finish_reason")))

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[StreamChunk]:
        body = self._body(messages, params, stream=True)
        client = self._http()
        response = await self._with_retries(lambda: self._open_stream(client, body))
        parts: list[str] = []
        finish: str | None = None
        usage: Any = None
        try:
            async for event in _sse_events(response):
                usage = _Usage.of(event.get("usage")) or usage
                for choice in event.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content") or ""
                    finish = choice.get("finish_reason") or finish
                    if text:
                        parts.append(text)
                        yield StreamChunk(text)
        except ExpertError:
            raise
        except Exception as exc:
            raise translate_error(exc, self.name) from exc
        finally:
            await response.aclose()
        prompt, completion = self._usage(usage, messages, "".join(parts))
        yield StreamChunk("", _finish(finish), prompt, completion)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- helpers ------------------------------------------------------------------------------

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            headers = {}
            key = self._api_key()
            if key:
                headers["Authorization"] = f"Bearer {key}"
            self._client = httpx.AsyncClient(
                base_url=(self.api_base or "").rstrip("/"),
                headers=headers,
                timeout=httpx.Timeout(self.timeout_s),
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            )
        return self._client

    def _body(
        self, messages: Sequence[Message], params: GenerationParams, stream: bool
    ) -> dict[str, Any]:
        # litellm-style "openai/<name>" strings name the provider first; the server wants <name>.
        model = self.model.split("/", 1)[1] if self.model.startswith("openai/") else self.model
        return openai_fields(model, messages, params, stream)

    async def _post_json(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._http().post("/chat/completions", json=body)
        if response.status_code >= 400:
            raise UpstreamHTTPError(response.status_code, response.text)
        data: dict[str, Any] = response.json()
        return data

    async def _open_stream(self, client: Any, body: dict[str, Any]) -> Any:
        request = client.build_request("POST", "/chat/completions", json=body)
        response = await client.send(request, stream=True)
        if response.status_code >= 400:
            text = (await response.aread()).decode(errors="replace")
            await response.aclose()
            raise UpstreamHTTPError(response.status_code, text)
        return response

    async def _with_retries(self, call: Any) -> Any:
        """Retry transient failures (before any byte of the answer), with a short backoff."""
        for attempt in range(self.retries + 1):
            try:
                return await call()
            except Exception as exc:
                error = exc if isinstance(exc, ExpertError) else translate_error(exc, self.name)
                if attempt == self.retries or not isinstance(error, _RETRYABLE):
                    raise error from exc
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
        raise AssertionError("unreachable")


class _Usage:
    """Attribute view of a usage dict, as RemoteBackend._usage reads litellm's objects."""

    def __init__(self, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens

    @classmethod
    def of(cls, usage: dict[str, Any] | None) -> _Usage | None:
        if not usage:
            return None
        return cls(usage.get("prompt_tokens"), usage.get("completion_tokens"))


async def _sse_events(response: Any) -> AsyncIterator[dict[str, Any]]:
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        if payload:
            yield json.loads(payload)
