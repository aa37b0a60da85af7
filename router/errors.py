"""One error tree for the gateway, rendered in OpenAI's error envelope.

Leaf packages define their own exceptions (they may not import router); any exception carrying
`status_code` and `error_type` attributes is rendered as-is, anything else becomes a 500 whose
message never includes a traceback.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    status_code = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after


class InvalidRequest(APIError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class ModelNotFound(APIError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class NotFound(APIError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class PayloadTooLarge(APIError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "payload_too_large"


class Unauthorized(APIError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class ServiceUnavailable(APIError):
    status_code = 503
    error_type = "service_unavailable"
    code = "unavailable"


def envelope(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) for any exception, in OpenAI's shape."""
    status = getattr(exc, "status_code", None)
    etype = getattr(exc, "error_type", None)
    if not isinstance(status, int) or not isinstance(etype, str):
        status, etype = 500, "server_error"
        message = f"internal error ({type(exc).__name__}); see the gateway log"
        code: Any = "internal_error"
        param = None
    else:
        message = str(getattr(exc, "message", None) or exc)
        code = getattr(exc, "code", None)
        param = getattr(exc, "param", None)
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["retry-after"] = str(max(1, round(float(retry_after))))
    body = {"error": {"message": message, "type": etype, "param": param, "code": code}}
    return status, body, headers
