"""A direct httpx client for OpenAI-compatible endpoints (vLLM, llama.cpp, TGI, Ollama's /v1).

litellm is the general path (any provider); this one trades that generality for per-call
overhead: one pooled httpx.AsyncClient, no per-call provider resolution or logging callbacks.
Chosen per expert with `client: httpx` in the YAML, or by `client: auto` (the default) for a
model litellm's table does not list (experts/registry.py:remote_client); only with an
`api_base`. It never calls litellm (`client: httpx` never imports it either; `auto` imports it
once at start-up to read its model table), so what it can do is not looked up there: an
OpenAI-compatible server is assumed to take tools, response_format and logprobs (the upstream
answers an error, never a silent downgrade, where it does not); vision is off unless the YAML
says so.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from experts.base import GenerationParams, Message
from experts.capabilities import Capabilities
from experts.openai_wire import request_body
from experts.upstream import UpstreamBackend


class UpstreamHTTPError(Exception):
    """A non-2xx answer; carries the status and headers (Retry-After) for translate_error."""

    def __init__(self, status_code: int, body: str, headers: Mapping[str, str] | None = None):
        super().__init__(f"HTTP {status_code}: {body[:300]}")
        self.status_code = status_code
        self.headers = dict(headers or {})


class OpenAIHTTPBackend(UpstreamBackend):
    """Speaks the OpenAI wire format itself over a pooled httpx client."""

    client_name = "httpx"
    _client: Any = None

    def derived_capabilities(self) -> Capabilities:
        return Capabilities(
            tools=True,
            json_object=True,
            json_schema=True,
            logprobs=True,
            context_window=self.window(),
            source="OpenAI-compatible defaults (httpx client)",
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- transport ----------------------------------------------------------------------------

    async def _complete(self, messages: Sequence[Message], params: GenerationParams) -> Any:
        response = await self._http().post(
            "/chat/completions", json=self._body(messages, params, stream=False)
        )
        if response.status_code >= 400:
            raise UpstreamHTTPError(response.status_code, response.text, response.headers)
        return response.json()

    async def _open_stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[Mapping[str, Any]]:
        client = self._http()
        body = self._body(messages, params, stream=True)
        request = client.build_request("POST", "/chat/completions", json=body)
        response = await client.send(request, stream=True)
        if response.status_code >= 400:
            text = (await response.aread()).decode(errors="replace")
            await response.aclose()
            raise UpstreamHTTPError(response.status_code, text, response.headers)
        return _sse_events(response)

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            headers = {}
            key = self.api_key()
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
        return request_body(model, messages, params, stream)


async def _sse_events(response: Any) -> AsyncIterator[Mapping[str, Any]]:
    """The JSON payloads of an SSE stream, up to `data: [DONE]`; the response is closed when the
    iterator is (UpstreamBackend.stream closes it on every path)."""
    try:
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                return
            if payload:
                event = json.loads(payload)
                if isinstance(event, Mapping):
                    yield event
    finally:
        await response.aclose()
