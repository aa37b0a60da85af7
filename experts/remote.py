"""Remote experts: any model litellm can reach (vLLM, Ollama, TGI, llama.cpp, provider APIs).

litellm is only a leaf client here: imported on first use (it takes seconds and would otherwise
fetch its model-cost map from the network), called with explicit arguments, its answers read as
OpenAI dicts by the shared translation (experts/openai_stream.py), its exceptions translated into
the experts' error tree at this edge (experts/upstream.py). Retries are ours, not litellm's, so
both remote clients honour Retry-After the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from experts.base import GenerationParams, Message
from experts.capabilities import Capabilities
from experts.openai_wire import request_body
from experts.upstream import UpstreamBackend

# OpenAI fields litellm takes as its own arguments with another meaning: sent in the body.
_BODY_ONLY = frozenset({"metadata"})
# Optional OpenAI fields that litellm drops without a word for a model whose provider config does
# not list them (e.g. `user` for an unknown model on an OpenAI-compatible server): those go in
# the request body as they are, so the upstream sees what the client sent.
_PASS_THROUGH = frozenset(
    {
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "logprobs",
        "top_logprobs",
        "presence_penalty",
        "frequency_penalty",
        "user",
    }
)


def import_litellm() -> Any:
    # Must be set before the first import, or litellm downloads its cost map at import time.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm


class RemoteBackend(UpstreamBackend):
    """Calls a remote chat model through litellm.acompletion."""

    client_name = "litellm"
    _supported: frozenset[str] | None = None

    def derived_capabilities(self) -> Capabilities:
        return litellm_capabilities(self.model, self.window())

    async def _complete(self, messages: Sequence[Message], params: GenerationParams) -> Any:
        response = await self._call(messages, params, stream=False)
        return _as_dict(response)

    async def _open_stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[Mapping[str, Any]]:
        response = await self._call(messages, params, stream=True)
        return _dicts(response)

    async def _call(
        self, messages: Sequence[Message], params: GenerationParams, *, stream: bool
    ) -> Any:
        litellm = import_litellm()
        # Our own deadline too: litellm's timeout does not cover every provider path.
        # asyncio.timeout, not wait_for: on 3.11 wait_for can drop a client's cancel.
        async with asyncio.timeout(self.timeout_s + 1):
            return await litellm.acompletion(**self._kwargs(messages, params, stream))

    def _kwargs(
        self, messages: Sequence[Message], params: GenerationParams, stream: bool
    ) -> dict[str, Any]:
        kwargs = request_body(self.model, messages, params, stream)
        supported = self._supported_params()
        raw = _BODY_ONLY | {k for k in _PASS_THROUGH if supported and k not in supported}
        extra = {k: kwargs.pop(k) for k in sorted(raw) if k in kwargs}
        if extra:
            kwargs["extra_body"] = extra
        kwargs.update(timeout=self.timeout_s, num_retries=0, max_retries=0)
        if self.api_base:
            kwargs["api_base"] = self.api_base
        key = self.api_key()
        if key:
            kwargs["api_key"] = key
        return kwargs

    def _supported_params(self) -> frozenset[str]:
        if self._supported is None:
            litellm = import_litellm()
            self._supported = frozenset(
                _supported_params(litellm, self.model, _provider(litellm, self.model))
            )
        return self._supported


async def _dicts(response: Any) -> AsyncIterator[Mapping[str, Any]]:
    async for chunk in response:
        yield _as_dict(chunk)


def _as_dict(obj: Any) -> Mapping[str, Any]:
    if isinstance(obj, Mapping):
        return obj
    dumped: Mapping[str, Any] = obj.model_dump()
    return dumped


def litellm_capabilities(model: str, context_window: int | None) -> Capabilities:
    """From litellm's bundled model table (offline). A model it does not list gets what its
    provider's OpenAI parameters allow: the upstream then decides, and says so with an error
    rather than a silent downgrade."""
    litellm = import_litellm()
    try:
        info = litellm.get_model_info(model)
    except Exception:
        info = None
    provider = _provider(litellm, model)
    supported = set(_supported_params(litellm, model, provider))
    if info is None:
        return Capabilities(
            tools="tools" in supported,
            json_object="response_format" in supported,
            json_schema="response_format" in supported,
            logprobs="logprobs" in supported,
            context_window=context_window,
            source=f"litellm provider '{provider}' parameters (model not in its table)",
        )
    embedding = info.get("mode") == "embedding"
    return Capabilities(
        chat=not embedding,
        tools=bool(info.get("supports_function_calling")),
        json_object="response_format" in supported and not embedding,
        json_schema=bool(info.get("supports_response_schema")),
        logprobs="logprobs" in supported and not embedding,
        vision=bool(info.get("supports_vision")),
        embeddings=embedding,
        context_window=context_window or info.get("max_input_tokens"),
        source="litellm model table",
    )


def litellm_lists(model: str) -> bool:
    """Whether litellm's bundled model table (offline) has an entry for `model`."""
    litellm = import_litellm()
    try:
        litellm.get_model_info(model)
    except Exception:  # litellm raises for a model it does not list
        return False
    return True


def _provider(litellm: Any, model: str) -> str | None:
    with contextlib.suppress(Exception):
        return str(litellm.get_llm_provider(model)[1])
    return None


def _supported_params(litellm: Any, model: str, provider: str | None) -> list[str]:
    with contextlib.suppress(Exception):
        return list(
            litellm.get_supported_openai_params(model=model, custom_llm_provider=provider) or []
        )
    return []
