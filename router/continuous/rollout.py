"""Safe rollout of a new classifier, as edits of the policy file: shadow, then canary, then
promote (or roll back). Pure. How the arms behave while a rollout runs: router.continuous.arms.

The policy's `classifier_rollout:` section (ClassifierRollout) names a candidate classifier and
a mode; `slm-router classifier-rollout ...` (router/ops/rollout_cli.py) edits it and applies the
file through the hot-reload path, so no step needs a restart.

  shadow   the candidate scores a share of requests beside the live classifier (no effect).
  canary   a share of users is routed by the candidate, sticky per user.
  promote  the candidate becomes `classifier:`; the rollout section goes.
  rollback the policy text from before the rollout started is written back, byte for byte.

Every step is logged with who, when, which artifact versions and the policy's hashes
(RolloutLogEntry, kept in Redis by the CLI).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from classifiers.spec import ClassifierSpec
from router.continuous.spec import ClassifierRollout, Mode

Action = Literal["shadow", "canary", "promote", "rollback"]
ROLLOUT_KEY = "classifier_rollout"
CLASSIFIER_KEY = "classifier"


# ---- the log -------------------------------------------------------------------------------


class ArtifactRef(BaseModel):
    """Which classifier: enough to find it again and to know it is the same one."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    path: str | None = None
    version: str | None = None
    data_sha256: str | None = None


class RolloutLogEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ts: float
    actor: str
    action: Action
    policy_file: str
    mode: Mode | None = None
    percent: float | None = None
    current: ArtifactRef
    candidate: ArtifactRef | None = None
    policy_sha256_before: str
    policy_sha256_after: str
    applied: bool = True
    forced: bool = False
    note: str = ""
    previous_policy: str = Field("", description="The full policy text before this step.")

    def summary(self) -> dict[str, Any]:
        return self.model_dump(exclude={"previous_policy"})


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---- editing the policy text ---------------------------------------------------------------
# PyYAML cannot round-trip comments, so edits replace whole top-level blocks as text: comments
# and layout everywhere else in the file survive. The blocks we replace are written in flow
# style, on one line each, so a later edit finds them as easily.

_TOP = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_-]*)\s*:")


def _block_span(lines: list[str], key: str) -> tuple[int, int] | None:
    """[start, end) lines of top-level `key:` and its indented body (trailing blanks and
    comments at column 0 stay outside: they usually introduce the next block)."""
    start = next(
        (i for i, ln in enumerate(lines) if (m := _TOP.match(ln)) and m["key"] == key), None
    )
    if start is None:
        return None
    end = start + 1
    last_body = start
    while end < len(lines):
        ln = lines[end]
        if ln.strip() and not ln[0].isspace() and not ln.startswith("#"):
            break
        if ln.strip() and ln[0].isspace():
            last_body = end
        end += 1
    return start, last_body + 1


def _flow(key: str, value: Mapping[str, Any]) -> str:
    import yaml

    body = yaml.safe_dump(dict(value), default_flow_style=True, sort_keys=False, width=10_000)
    return f"{key}: {body.strip()}\n"


def set_block(text: str, key: str, value: Mapping[str, Any] | None) -> str:
    """`text` with top-level `key` replaced by `value` (None removes it; absent: appended)."""
    lines = text.splitlines(keepends=True)
    span = _block_span(lines, key)
    new = [] if value is None else [_flow(key, value)]
    if span is None:
        if value is None:
            return text
        tail = "" if not lines or lines[-1].endswith("\n") else "\n"
        gap = "" if not lines or not (text + tail).strip() or text.endswith("\n\n") else "\n"
        return text + tail + gap + new[0]
    return "".join(lines[: span[0]] + new + lines[span[1] :])


def read_doc(text: str) -> dict[str, Any]:
    import yaml

    doc = yaml.safe_load(text) or {}
    if not isinstance(doc, dict):
        raise ValueError("a policy file is a YAML mapping")
    return doc


def current_rollout(text: str) -> ClassifierRollout | None:
    raw = read_doc(text).get(ROLLOUT_KEY)
    return None if raw is None else ClassifierRollout.model_validate(raw)


def _spec_dict(spec: ClassifierSpec) -> dict[str, Any]:
    return {"kind": spec.kind, **spec.model_dump(exclude_defaults=True, exclude_none=True)}


def step_shadow(text: str, candidate: ClassifierSpec, percent: float = 100.0) -> str:
    ro = ClassifierRollout(candidate=candidate, mode="shadow", percent=percent)
    return set_block(text, ROLLOUT_KEY, _rollout_dict(ro))


def step_canary(text: str, percent: float, candidate: ClassifierSpec | None = None) -> str:
    now = current_rollout(text)
    if candidate is None:
        if now is None:
            raise ValueError("no rollout in progress: name the candidate (--candidate DIR)")
        candidate = now.candidate
    base = now.model_dump() if now is not None and now.candidate == candidate else {}
    ro = ClassifierRollout.model_validate(
        {**base, "candidate": candidate, "mode": "canary", "percent": percent}
    )
    return set_block(text, ROLLOUT_KEY, _rollout_dict(ro))


def step_promote(text: str) -> str:
    """The candidate replaces the live classifier; placement and scaling settings stay."""
    now = current_rollout(text)
    if now is None:
        raise ValueError("no rollout in progress: nothing to promote")
    live = dict(read_doc(text).get(CLASSIFIER_KEY) or {})
    for key in ("kind", "path", "encoder", "oos_threshold", "temperature"):
        live.pop(key, None)
    merged = {**_spec_dict(now.candidate), **live}
    ClassifierSpec.model_validate(merged)  # refuse here what the loader would refuse
    text = set_block(text, CLASSIFIER_KEY, merged)
    return set_block(text, ROLLOUT_KEY, None)


def _rollout_dict(ro: ClassifierRollout) -> dict[str, Any]:
    body = ro.model_dump(exclude_defaults=True, exclude={"candidate"})
    return {"candidate": _spec_dict(ro.candidate), "mode": ro.mode, "percent": ro.percent, **body}
