"""Reading a policy file into an AppConfig, with errors ops can act on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from router.config import AppConfig, PolicyLoadError, resolve_paths

PACKAGE_DEFAULT = Path(__file__).resolve().parent.parent / "policies" / "default.yaml"


def default_policy_path() -> Path:
    return Path(os.environ.get("SLM_ROUTER_POLICY", str(PACKAGE_DEFAULT)))


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def parse_policy(text: str, filename: str = "<policy>", base: Path | None = None) -> AppConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else filename
        raise PolicyLoadError([f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(data, dict):
        raise PolicyLoadError([f"{filename}: a policy is a YAML mapping at the top level"])
    data = resolve_paths(data, base or Path.cwd())
    try:
        return AppConfig.model_validate(data)
    except ValidationError as exc:
        issues = [f"{filename}: {_loc(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise PolicyLoadError(issues) from None


def load_policy(path: str | os.PathLike[str], base: Path | None = None) -> AppConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyLoadError([f"{p}: cannot read: {exc.strerror}"]) from None
    return parse_policy(text, str(p), base)
