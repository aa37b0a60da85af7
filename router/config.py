"""The one policy document: the leaves' schemas composed, plus gateway settings; and reading a
policy file into it, with errors ops can act on (file:line:col, path, suggestion), through the
policies package's position-aware loader."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from classifiers.spec import ClassifierSpec
from experts.spec import ExpertSpec
from policies.checks import check_routing
from policies.issues import PolicyIssue
from policies.loader import LoadResult, validate_text
from policies.schema import RoutingPolicy
from router.continuous.spec import (
    ClassifierRollout,
    DriftPolicy,
    FeedbackPolicy,
    with_absolute_candidate,
)
from router.errors import PolicyLoadError

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
    baseline_expert: str | None = Field(
        None,
        description="Expert whose prices define the all-to-one baseline for savings "
        "(default: routing.fallback).",
    )


class AppConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    name: str = Field("slm-router", pattern=r"^[A-Za-z0-9_.-]+$")
    classifier: ClassifierSpec = ClassifierSpec()
    experts: dict[str, ExpertSpec] = Field(..., min_length=1)
    routing: RoutingPolicy
    gateway: GatewaySpec = GatewaySpec()
    classifier_rollout: ClassifierRollout | None = Field(
        None, description="A candidate classifier in shadow or canary (docs/CONTINUOUS.md)."
    )
    drift: DriftPolicy = DriftPolicy()
    feedback: FeedbackPolicy = FeedbackPolicy()

    @model_validator(mode="after")
    def _names(self) -> AppConfig:
        # Unknown expert references are cross-checked by the loader (policies.checks), which
        # can point at the exact line and suggest the intended name.
        for name in self.experts:
            if name in RESERVED_MODEL_NAMES:
                raise ValueError(f"expert name '{name}' is reserved")
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


def with_absolute_paths(config: AppConfig, base: Path) -> AppConfig:
    """Make relative artifact paths absolute (against `base`, the working dir) before the
    config is shipped to Ray workers, whose working directory differs."""
    clf = config.classifier
    clf_update = {
        key: str((base / value).resolve())
        for key in ("path", "escalation_path")
        if isinstance(value := getattr(clf, key), str) and _is_relative_path(value)
    }
    experts = {}
    for name, spec in config.experts.items():
        update = {
            key: str((base / value).resolve())
            for key in ("model", "adapter")
            if isinstance(value := getattr(spec, key), str) and value.startswith(("./", "../"))
        }
        experts[name] = spec.model_copy(update=update) if update else spec
    drift = config.drift
    if drift.reference and _is_relative_path(drift.reference):
        drift = drift.model_copy(update={"reference": str((base / drift.reference).resolve())})
    return config.model_copy(
        update={
            "classifier": clf.model_copy(update=clf_update),
            "experts": experts,
            "classifier_rollout": with_absolute_candidate(config.classifier_rollout, base),
            "drift": drift,
        }
    )


def _is_relative_path(value: str) -> bool:
    return bool(value) and not Path(value).is_absolute() and ":" not in value.split("/")[0]


PACKAGE_DEFAULT = Path(__file__).resolve().parent.parent / "policies" / "default.yaml"


def default_policy_path() -> Path:
    return Path(os.environ.get("SLM_ROUTER_POLICY", str(PACKAGE_DEFAULT)))


def cross_check(config: AppConfig) -> Sequence[PolicyIssue]:
    issues = list(check_routing(config.routing, set(config.experts)))
    if config.classifier.kind == "examples" and not config.route_examples():
        issues.append(
            PolicyIssue(
                "the `examples` classifier builds itself from the routes' examples and "
                "descriptions, and no route has any",
                loc=("classifier", "kind"),
                suggestion="add `examples:` to the routes, or name a trained artifact",
            )
        )
    return issues


def validate_policy_text(text: str, filename: str = "<policy>") -> LoadResult[AppConfig]:
    return validate_text(text, AppConfig, file=filename, cross_check=cross_check)


def parse_policy(text: str, filename: str = "<policy>", base: Path | None = None) -> AppConfig:
    result = validate_policy_text(text, filename)
    if result.value is None:
        raise PolicyLoadError([str(i) for i in result.issues])
    return with_absolute_paths(result.value, base or Path.cwd())


def read_policy_text(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyLoadError([f"{p}: cannot read: {exc}"]) from None


def load_policy(path: str | os.PathLike[str], base: Path | None = None) -> AppConfig:
    return parse_policy(read_policy_text(path), str(path), base)
