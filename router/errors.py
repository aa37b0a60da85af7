"""One error tree for the gateway, rendered once, in OpenAI's error envelope, by the app-level
handlers (router.serving.http.errors). Code that finds a problem raises; nothing else builds an
envelope.

Each class carries its HTTP status, OpenAI error type and code. Leaf packages define their own
exceptions (they may not import router); any exception carrying `status_code` and `error_type`
attributes is rendered as-is, anything else becomes a 500 whose message never includes a
traceback.
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


# ---- the request ---------------------------------------------------------------------------


class InvalidRequest(APIError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class NotFound(APIError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class PayloadTooLarge(APIError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "payload_too_large"


# ---- the caller: keys, rate limits, budgets (router.finance) -------------------------------


class AccessError(APIError):
    status_code = 403
    error_type = "permission_error"
    code = "forbidden"


class InvalidApiKey(AccessError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class AdminRequired(AccessError):
    code = "admin_key_required"


class RateLimited(AccessError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class BudgetExceeded(AccessError):
    status_code = 429
    error_type = "insufficient_quota"
    code = "budget_exceeded"


class AccessUnavailable(AccessError):
    """Redis did not answer: we fail closed rather than let spend go unchecked."""

    status_code = 503
    error_type = "service_unavailable"
    code = "auth_backend_unavailable"


# ---- the policy file -------------------------------------------------------------------------


class PolicyLoadError(APIError):
    """A policy file that can't be used; `issues` are printable lines for ops."""

    status_code = 422
    error_type = "invalid_request_error"
    code = "invalid_policy"

    def __init__(self, issues: list[str]) -> None:
        super().__init__("invalid policy:\n" + "\n".join(issues))
        self.issues = issues

    def __str__(self) -> str:
        return "\n".join(self.issues)


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
