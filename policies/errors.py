"""The policies' error tree.

Each error carries the HTTP status and OpenAI error type the gateway answers with, like
experts/errors.py, so the router turns any of them into OpenAI's envelope without a lookup table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from policies.issues import PolicyIssue


class PolicyError(Exception):
    """Base of every error the policies package raises."""

    status_code = 400
    error_type = "invalid_request_error"
    code: str | None = "policy_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class PinningNotAllowed(PolicyError):
    """The client named a model but the policy (or its team's policy) forbids pinning."""

    code = "model_pinning_disabled"


class ModelNotFound(PolicyError):
    status_code = 404
    code = "model_not_found"


class ModelNotAllowed(PolicyError):
    """The team's allowed experts exclude the model the client pinned."""

    status_code = 403
    error_type = "permission_error"
    code = "model_not_allowed"


class NoAllowedExpert(PolicyError):
    """Nothing in the chain is allowed for the team. A checked policy never gets here."""

    status_code = 403
    error_type = "permission_error"
    code = "no_allowed_expert"


class MissingCapability(PolicyError):
    """The request needs what no expert it may use can do (tools, a JSON schema, images, ...),
    or what the pinned expert cannot do: a 400 naming it, never a silent downgrade."""

    code = "unsupported_capability"

    def __init__(
        self, message: str, *, missing: Sequence[str] = (), param: str | None = None
    ) -> None:
        super().__init__(message, param=param)
        self.missing = tuple(missing)


class PolicyInvalid(PolicyError):
    """A policy document failed to load: YAML syntax, schema or cross-checks."""

    status_code = 422
    code = "invalid_policy"

    def __init__(self, issues: Sequence[PolicyIssue]) -> None:
        self.issues = tuple(issues)
        errors = [i for i in self.issues if i.severity == "error"]
        first = str(errors[0]) if errors else "invalid policy"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(first + more)
