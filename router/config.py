"""The one policy document: the leaves' schemas composed, plus gateway settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from classifiers.spec import ClassifierSpec
from experts.spec import ExpertSpec
from policies.schema import RoutingPolicy

RESERVED_MODEL_NAMES = ("auto",)


class GatewaySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    replicas: int = Field(1, ge=1, description="Ingress replicas (each is one process).")
    num_cpus: float = Field(0.0, ge=0)
    max_ongoing_requests: int = Field(64, ge=1)
    max_body_bytes: int = Field(2_000_000, ge=1024)
    max_messages: int = Field(512, ge=1)
    request_timeout_s: float = Field(300.0, gt=0)
    auth: bool = Field(False, description="Require `Authorization: Bearer <key>` on /v1.")
    log_prompts: bool = Field(False, description="Allow prompt text in telemetry.")


class AppConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    name: str = Field("slm-router", pattern=r"^[A-Za-z0-9_.-]+$")
    classifier: ClassifierSpec = ClassifierSpec()
    experts: dict[str, ExpertSpec] = Field(..., min_length=1)
    routing: RoutingPolicy
    gateway: GatewaySpec = GatewaySpec()

    @model_validator(mode="after")
    def _names(self) -> AppConfig:
        for name in self.experts:
            if name in RESERVED_MODEL_NAMES:
                raise ValueError(f"expert name '{name}' is reserved")
        missing = sorted(self.routing.referenced_experts() - set(self.experts))
        if missing:
            raise ValueError(f"routing refers to unknown experts: {', '.join(missing)}")
        return self

    def route_examples(self) -> dict[str, list[str]]:
        """Zero-training classifier input: each route's examples plus its description."""
        out: dict[str, list[str]] = {}
        for route in self.routing.routes:
            texts = list(route.examples)
            if route.description:
                texts.append(route.description)
            if texts:
                out[route.domain] = texts
        return out


class PolicyLoadError(Exception):
    """A policy file that can't be used; `issues` are printable lines for ops."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_policy"

    def __init__(self, issues: list[str]) -> None:
        super().__init__("\n".join(issues))
        self.issues = issues
        self.message = "invalid policy:\n" + "\n".join(issues)


def resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make relative artifact paths absolute (against `base`, the working dir) before shipping
    the config to Ray workers, whose working directory differs."""
    clf = data.get("classifier")
    if isinstance(clf, dict):
        for key in ("path", "escalation_path"):
            if isinstance(clf.get(key), str) and _is_relative_path(clf[key]):
                clf[key] = str((base / clf[key]).resolve())
    experts = data.get("experts")
    if isinstance(experts, dict):
        for spec in experts.values():
            if not isinstance(spec, dict):
                continue
            for key in ("model", "adapter"):
                value = spec.get(key)
                if isinstance(value, str) and value.startswith(("./", "../")):
                    spec[key] = str((base / value).resolve())
    return data


def _is_relative_path(value: str) -> bool:
    return bool(value) and not Path(value).is_absolute() and ":" not in value.split("/")[0]
