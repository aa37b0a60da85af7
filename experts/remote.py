"""Remote experts: any model litellm can reach (vLLM, Ollama, TGI, llama.cpp, provider APIs).

litellm is only a leaf client here: imported on first use (it takes seconds and would otherwise
fetch its model-cost map from the network), called with explicit arguments, its exceptions
translated into the experts' error tree at this edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

from experts.base import Backend, Completion, GenerationParams, Message, ModelInfo, StreamChunk
from experts.errors import (
    ContextWindowExceeded,
    ExpertError,
    ExpertOverloaded,
    ExpertTimeout,
    ExpertUnavailable,
    InvalidGenerationRequest,
)
from experts.spec import ExpertSpec

# Used when neither the spec nor litellm's bundled model table knows the window: large, so the
# provider (which does know) is the one that rejects an over-long prompt.
_UNKNOWN_CONTEXT = 131_072
# OpenAI-compatible servers without auth (vLLM, llama.cpp, Ollama) still need a non-empty key
# for the client libraries.
_NO_KEY = "no-key"


def import_litellm() -> Any:
    # Must be set before the first import, or litellm downloads its cost map at import time.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm


class RemoteBackend(Backend):
    """Calls a remote chat model through litellm.acompletion."""

    def __init__(
        self,
        name: str,
        model: str,
        *,
        api_base: str | None = None,
        api_key_env: str | None = None,
        timeout_s: float = 60.0,
        retries: int = 0,
        context_window: int | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.api_base = api_base
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.retries = retries
        self._context_window = context_window

    @classmethod
    def from_spec(cls, name: str, spec: ExpertSpec) -> RemoteBackend:
        """This class for the spec (see build_remote for choosing litellm or httpx)."""
        return cls(
            name,
            spec.model,
            api_base=spec.api_base,
            api_key_env=spec.api_key_env,
            timeout_s=spec.timeout_s,
            retries=spec.retries,
            context_window=spec.context_window,
        )

    # -- Backend ------------------------------------------------------------------------------

    def info(self) -> ModelInfo:
        meta: dict[str, Any] = {"api_base": self.api_base, "client": "litellm"}
        return ModelInfo("remote", self.model, self._window(), meta)

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        counter = _loaded_litellm()
        if counter is not None:
            try:
                return int(counter.token_counter(model=self.model, messages=_dicts(messages)))
            except Exception:  # no tokenizer known for this model: fall through to the estimate
                pass
        # ~4 characters a token: good enough for a pre-check; the provider enforces the window.
        return sum(len(m.content) // 4 + 4 for m in messages)

    async def generate(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        response = await self._call(messages, params, stream=False)
        choice = response.choices[0]
        text = choice.message.content or ""
        prompt, completion = self._usage(getattr(response, "usage", None), messages, text)
        return Completion(text, prompt, completion, _finish(choice.finish_reason))

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[StreamChunk]:
        response = await self._call(messages, params, stream=True)
        parts: list[str] = []
        finish: str | None = None
        usage: Any = None
        try:
            async for chunk in response:
                usage = getattr(chunk, "usage", None) or usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                text = getattr(choice.delta, "content", None) or ""
                finish = choice.finish_reason or finish
                if text:
                    parts.append(text)
                    yield StreamChunk(text)
        except ExpertError:
            raise
        except Exception as exc:
            raise translate_error(exc, self.name) from exc
        prompt, completion = self._usage(usage, messages, "".join(parts))
        yield StreamChunk("", _finish(finish), prompt, completion)

    # -- helpers ------------------------------------------------------------------------------

    async def _call(
        self, messages: Sequence[Message], params: GenerationParams, *, stream: bool
    ) -> Any:
        litellm = import_litellm()
        kwargs = self._request_kwargs(messages, params, stream)
        try:
            # Our own deadline too: litellm's timeout does not cover every provider path.
            return await asyncio.wait_for(
                litellm.acompletion(**kwargs), timeout=self.timeout_s * (self.retries + 1) + 1
            )
        except ExpertError:
            raise
        except Exception as exc:
            raise translate_error(exc, self.name) from exc

    def _request_kwargs(
        self, messages: Sequence[Message], params: GenerationParams, stream: bool
    ) -> dict[str, Any]:
        kwargs = openai_fields(self.model, messages, params, stream)
        kwargs.update(timeout=self.timeout_s, num_retries=self.retries)
        if self.api_base:
            kwargs["api_base"] = self.api_base
        key = self._api_key()
        if key:
            kwargs["api_key"] = key
        return kwargs

    def _api_key(self) -> str | None:
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ExpertUnavailable(
                    f"expert '{self.name}': environment variable {self.api_key_env} is not set"
                )
            return key
        return _NO_KEY if self.api_base else None

    def _usage(self, usage: Any, messages: Sequence[Message], text: str) -> tuple[int, int]:
        prompt = getattr(usage, "prompt_tokens", None)
        completion = getattr(usage, "completion_tokens", None)
        if prompt is None:
            prompt = self.count_prompt_tokens(messages)
        if completion is None:
            completion = self._count_text(text)
        return int(prompt), int(completion)

    def _count_text(self, text: str) -> int:
        if not text:
            return 0
        counter = _loaded_litellm()
        if counter is not None:
            try:
                return int(counter.token_counter(model=self.model, text=text))
            except Exception:
                pass
        return max(1, len(text) // 4)

    def _window(self) -> int:
        if self._context_window:
            return self._context_window
        window = _UNKNOWN_CONTEXT
        litellm = _loaded_litellm()
        if litellm is not None:
            # litellm's bundled model table; it raises for a model it does not list.
            with contextlib.suppress(Exception):
                window = int(litellm.get_model_info(self.model).get("max_input_tokens") or window)
        self._context_window = window
        return window


def build_remote(name: str, spec: ExpertSpec) -> RemoteBackend:
    """The remote backend the spec asks for: litellm (default) or the direct httpx client."""
    if spec.client == "httpx":
        from experts.openai_http import OpenAIHTTPBackend

        return OpenAIHTTPBackend.from_spec(name, spec)
    import_litellm()  # seconds: pay them at start-up, not inside the first request
    return RemoteBackend.from_spec(name, spec)


def _loaded_litellm() -> Any:
    """litellm for token counting, only if already imported (never a hidden multi-second import
    on the request path; the direct httpx client never imports it)."""
    return sys.modules.get("litellm")


def openai_fields(
    model: str, messages: Sequence[Message], params: GenerationParams, stream: bool
) -> dict[str, Any]:
    """The chat-completions request fields both remote clients send (litellm and httpx)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": _dicts(messages),
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stream": stream,
    }
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def _dicts(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _finish(reason: str | None) -> str:
    # Providers also say "eos", "end_turn", "content_filter"...: the gateway speaks OpenAI's two.
    return "length" if reason in ("length", "max_tokens") else "stop"


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def translate_error(exc: BaseException, name: str) -> ExpertError:
    """litellm / openai / httpx exceptions as the experts' errors, by kind then by status."""
    import httpx

    kind = type(exc).__name__
    message = f"expert '{name}': {kind}: {str(exc)[:500]}"
    status = _status(exc)
    lowered = str(exc).lower()
    if (
        kind == "ContextWindowExceededError"
        or "context length" in lowered
        or "context window" in lowered
    ):
        return ContextWindowExceeded(message, param="messages")
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)) or "Timeout" in kind:
        return ExpertTimeout(message)
    if status == 429 or kind == "RateLimitError":
        return ExpertOverloaded(message)
    if isinstance(exc, httpx.TransportError) or kind == "APIConnectionError":
        return ExpertUnavailable(message)
    if status is not None and status >= 500:
        return ExpertUnavailable(message)
    if status in (401, 403, 404):
        return ExpertUnavailable(message)  # misconfigured upstream: another expert may answer
    if status is not None and 400 <= status < 500:
        return InvalidGenerationRequest(message)
    return ExpertError(message)
