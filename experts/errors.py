"""The experts' error tree.

Backends translate foreign errors (torch, transformers, httpx, litellm) into these at their edge,
so the gateway only ever sees errors that carry an HTTP status and an OpenAI error type.
"""

from __future__ import annotations


class ExpertError(Exception):
    """Base of every error an expert backend raises."""

    status_code = 502
    error_type = "upstream_error"
    code: str | None = "expert_error"
    # An error before the first token may be retried on the next expert in the chain.
    retryable = True
    # Seconds a client should wait before retrying (rendered as Retry-After), when known.
    retry_after: float | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ExpertUnavailable(ExpertError):
    status_code = 503
    error_type = "service_unavailable"
    code = "expert_unavailable"


class ExpertTimeout(ExpertError):
    status_code = 504
    error_type = "timeout"
    code = "expert_timeout"


class ExpertOverloaded(ExpertError):
    status_code = 429
    error_type = "rate_limit_exceeded"
    code = "expert_overloaded"


class ContextWindowExceeded(ExpertError):
    """The client's prompt does not fit: the client's fault, never retried elsewhere."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "context_length_exceeded"
    retryable = False


class InvalidGenerationRequest(ExpertError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_parameter"
    retryable = False


class UnsupportedCapability(ExpertError):
    """The request needs something this expert cannot do (tools, a JSON schema, images, ...).

    The router filters the chain by capabilities before it calls an expert, so reaching this is
    the backend's own guard against a silent downgrade: a client error (400 naming what is
    missing), not the expert's failure, hence not retried on the next expert."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "unsupported_capability"
    retryable = False


class UpstreamStreamError(ExpertError):
    """The upstream reported an error inside its stream (an SSE `{"error": ...}` event) or the
    stream broke off. Raised before the first chunk it lets the router fall back; after it, the
    router ends the client's stream with an error event and records an error."""

    status_code = 502
    error_type = "upstream_error"
    code = "upstream_stream_error"


def translate_torch_error(exc: BaseException) -> ExpertError:
    """Torch/transformers failures as the experts' errors (OOM is overload, not a bug)."""
    name = type(exc).__name__
    if isinstance(exc, ExpertError):
        return exc
    if "OutOfMemory" in name or "out of memory" in str(exc):
        return ExpertOverloaded(f"local model ran out of memory: {exc}")
    return ExpertError(f"local model failed: {name}: {exc}")
