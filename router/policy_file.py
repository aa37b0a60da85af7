"""Reading a policy file into an AppConfig, with errors ops can act on (file:line:col, path,
suggestion), through the policies package's position-aware loader."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from policies.checks import check_routing
from policies.issues import PolicyIssue
from policies.loader import LoadResult, validate_text
from router.config import AppConfig, PolicyLoadError, with_absolute_paths

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
