"""What both remote clients share: settings, the answer/stream translation, token-count fallback,
retries that honour Retry-After, and translating foreign errors into the experts' tree.

A client (experts/remote.py through litellm, experts/openai_http.py over httpx) only implements
the transport: `_complete` (one JSON answer) and `_open_stream` (an iterator of chunk dicts that
has already failed, before yielding, if the upstream refused the request).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import email.utils
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from experts.base import Backend, Completion, GenerationParams, Message, ModelInfo, StreamChunk
from experts.errors import (
    ContextWindowExceeded,
    ExpertError,
    ExpertOverloaded,
    ExpertTimeout,
    ExpertUnavailable,
    InvalidGenerationRequest,
    UpstreamStreamError,
)
from experts.openai_stream import Counter, StreamTranslator, completion_from_openai
from experts.spec import ExpertSpec

T = TypeVar("T")
# Used when neither the spec nor litellm's bundled model table knows the window: large, so the
# provider (which does know) is the one that rejects an over-long prompt.
UNKNOWN_CONTEXT = 131_072
# OpenAI-compatible servers without auth (vLLM, llama.cpp, Ollama) still need a non-empty key
# for the client libraries.
NO_KEY = "no-key"
# The longest wait between attempts. A Retry-After beyond it is not waited out: the error goes
# to the router with retry_after set, which tries the next expert or tells the client when.
RETRY_CAP_S = 8.0
_RETRY_BASE_S = 0.1
_RETRYABLE = (ExpertUnavailable, ExpertTimeout, ExpertOverloaded)


class UpstreamBackend(Backend):
    """A chat model behind an OpenAI-compatible API; subclasses supply the transport."""

    client_name: ClassVar[str] = "upstream"

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
    def from_spec(cls: type[U], name: str, spec: ExpertSpec) -> U:
        return cls(
            name,
            spec.model,
            api_base=spec.api_base,
            api_key_env=spec.api_key_env,
            timeout_s=spec.timeout_s,
            retries=spec.retries,
            context_window=spec.effective_context_window,
        )

    # -- transport (subclasses) ---------------------------------------------------------------

    @abc.abstractmethod
    async def _complete(self, messages: Sequence[Message], params: GenerationParams) -> Any:
        """One non-streamed answer as an OpenAI chat.completion dict."""

    @abc.abstractmethod
    async def _open_stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[Mapping[str, Any]]:
        """An opened stream of chat.completion.chunk dicts (raises if the upstream refused)."""

    # -- Backend ------------------------------------------------------------------------------

    def info(self) -> ModelInfo:
        meta: dict[str, Any] = {"api_base": self.api_base, "client": self.client_name}
        return ModelInfo("remote", self.model, self.window(), meta, self.capabilities())

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        counter = loaded_litellm()
        if counter is not None:
            from experts.openai_wire import messages_to_openai

            with contextlib.suppress(Exception):  # no tokenizer known for the model: estimate
                dicts = messages_to_openai(messages)
                return int(counter.token_counter(model=self.model, messages=dicts))
        # ~4 characters a token: good enough for a pre-check; the provider enforces the window.
        return sum(len(m.text) // 4 + 4 for m in messages)

    async def generate(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        data = await self._with_retries(lambda: self._complete(messages, params))
        return completion_from_openai(data, self._counter(messages))

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[StreamChunk]:
        events = await self._with_retries(lambda: self._open_stream(messages, params))
        translator = StreamTranslator()
        try:
            async for event in events:
                chunk = translator.feed(event)
                if chunk is not None:
                    yield chunk
        except UpstreamStreamError:
            raise
        except ExpertError as exc:
            raise translator.failure(exc) from exc
        except Exception as exc:
            raise translator.failure(translate_error(exc, self.name)) from exc
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        yield translator.final(self._counter(messages))

    # -- shared helpers -----------------------------------------------------------------------

    def api_key(self) -> str | None:
        return resolve_api_key(self.name, self.api_key_env, self.api_base)

    def window(self) -> int:
        if self._context_window:
            return self._context_window
        window = UNKNOWN_CONTEXT
        litellm = loaded_litellm()
        if litellm is not None:
            # litellm's bundled model table; it raises for a model it does not list.
            with contextlib.suppress(Exception):
                window = int(litellm.get_model_info(self.model).get("max_input_tokens") or window)
        self._context_window = window
        return window

    def _counter(self, messages: Sequence[Message]) -> Counter:
        return lambda text: (self.count_prompt_tokens(messages), self._count_text(text))

    def _count_text(self, text: str) -> int:
        if not text:
            return 0
        counter = loaded_litellm()
        if counter is not None:
            with contextlib.suppress(Exception):
                return int(counter.token_counter(model=self.model, text=text))
        return max(1, len(text) // 4)

    async def _with_retries(self, call: Callable[[], Awaitable[T]]) -> T:
        return await with_retries(call, self.retries, self.name)


U = TypeVar("U", bound=UpstreamBackend)


def resolve_api_key(name: str, api_key_env: str | None, api_base: str | None) -> str | None:
    """The key from the named environment variable; a placeholder for keyless local servers."""
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise ExpertUnavailable(
                f"expert '{name}': environment variable {api_key_env} is not set"
            )
        return key
    return NO_KEY if api_base else None


def loaded_litellm() -> Any:
    """litellm for token counting, only if already imported (never a hidden multi-second import
    on the request path; the direct httpx client never imports it)."""
    return sys.modules.get("litellm")


# -- retries ----------------------------------------------------------------------------------


async def with_retries(call: Callable[[], Awaitable[T]], retries: int, name: str) -> T:
    """Run `call`, retrying transient failures (before any byte of the answer) up to `retries`
    times: after the upstream's Retry-After when it sent one, else exponential backoff; both
    with jitter, neither longer than RETRY_CAP_S."""
    for attempt in range(retries + 1):
        try:
            return await call()
        except Exception as exc:
            error = exc if isinstance(exc, ExpertError) else translate_error(exc, name)
            wait = backoff_s(attempt, error.retry_after)
            if attempt == retries or not isinstance(error, _RETRYABLE) or wait is None:
                raise error from exc
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")


def backoff_s(
    attempt: int,
    retry_after: float | None,
    *,
    cap: float = RETRY_CAP_S,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None to give up now.

    With Retry-After: that long plus up to 10% (never earlier than asked; spread so that many
    clients told the same do not return in one burst). Without: half of base * 2**attempt plus a
    random part of the other half ("equal jitter")."""
    if retry_after is not None:
        if retry_after > cap:
            return None
        return retry_after + rand() * max(retry_after * 0.1, _RETRY_BASE_S)
    ceiling = min(cap, _RETRY_BASE_S * 2**attempt)
    return ceiling / 2 + rand() * ceiling / 2


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds from `retry-after-ms`, or `retry-after` as seconds or an HTTP date."""
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    with contextlib.suppress(ValueError):
        if "retry-after-ms" in lowered:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
    value = lowered.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _headers_of(exc: BaseException) -> Mapping[str, str] | None:
    """Response headers carried by an httpx / openai / litellm exception (litellm keeps the
    upstream's own in `litellm_response_headers`)."""
    response = getattr(exc, "response", None)
    for headers in (
        getattr(exc, "litellm_response_headers", None),
        getattr(exc, "headers", None),
        getattr(response, "headers", None),
    ):
        if headers and hasattr(headers, "items"):
            return headers  # type: ignore[no-any-return]
    return None


# -- foreign errors ---------------------------------------------------------------------------


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def translate_error(exc: BaseException, name: str) -> ExpertError:
    """litellm / openai / httpx exceptions as the experts' errors, by kind then by status; the
    upstream's Retry-After travels along as `retry_after`."""
    error = _classify(exc, name)
    if isinstance(error, _RETRYABLE):
        error.retry_after = parse_retry_after(_headers_of(exc))
    return error


def _classify(exc: BaseException, name: str) -> ExpertError:
    import httpx

    kind = type(exc).__name__
    message = f"expert '{name}': {kind}: {str(exc)[:500]}"
    status = _status(exc)
    lowered = str(exc).lower()
    if kind == "MidStreamFallbackError":  # litellm's name for an error event inside a stream
        return UpstreamStreamError(message)
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
