"""Safe rollout of a new classifier, as steps that edit the policy file: shadow, then canary,
then promote (or roll back). How the arms behave while a rollout runs: router.continuous.arms.

The policy's `classifier_rollout:` section (ClassifierRollout) names a candidate classifier and
a mode. A step (`run_step`; `slm-router classifier-rollout ...`, router/ops/rollout_cli.py)
edits that section (or `classifier:`), checks the result as `policy validate` would, writes the
file, applies it through the applier it is given (the CLI's: the hot-reload path, a Serve
redeploy, so no step needs a restart) and records the step in the rollout log. If the apply
fails the file is put back as it was and nothing is recorded.

  shadow   the candidate scores a share of requests beside the live classifier (no effect).
  canary   a share of users is routed by the candidate, sticky per user.
  promote  the candidate becomes `classifier:`; the rollout section goes.
  rollback the policy text from before the rollout started is written back, byte for byte.

Gate: `canary` and `promote` need the candidate's comparison report (DIR/comparison.json, from
`slm-router classifier retrain`) to say it is not worse than the live classifier; `force`
overrides (and is recorded). `shadow` is always allowed: it cannot change an answer. Rollback
refuses when the file was edited by hand since the last step (`force` overrides).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classifiers.spec import ClassifierSpec
from router.continuous.identity import identify, resolve
from router.continuous.rollout_log import (
    LOG_CAP,
    Action,
    ArtifactRef,
    RolloutLog,
    RolloutLogEntry,
)
from router.continuous.spec import ClassifierRollout

ROLLOUT_KEY = "classifier_rollout"
CLASSIFIER_KEY = "classifier"
REPORT = "comparison.json"
Applier = Callable[[Path], object]
Validator = Callable[[str, str], None]


class StepRefused(Exception):
    """A step that must not run; the message says why and how to override."""


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


# ---- artifacts and checks ------------------------------------------------------------------


def artifact_ref(section: dict[str, Any] | None, doc: dict[str, Any], base: Path) -> ArtifactRef:
    """Identify a classifier section of a policy text (router.continuous.identity), keeping the
    section's own `kind`."""
    section = dict(section or {})
    kind = str(section.get("kind", "examples"))
    path = section.get("path")
    ident = identify(kind, str(path) if path else None, _route_examples(doc), base)
    return ArtifactRef(
        kind=kind,
        path=str(path) if path else None,
        version=ident["version"],
        data_sha256=ident["data_sha256"],
    )


def _route_examples(doc: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for route in (doc.get("routing") or {}).get("routes") or []:
        texts = [str(t) for t in route.get("examples") or []]
        if route.get("description"):
            texts.append(str(route["description"]))
        if texts:
            out[str(route["domain"])] = texts
    return out


def read_report(candidate: ArtifactRef, base: Path) -> dict[str, Any] | None:
    if not candidate.path:
        return None
    path = resolve(candidate.path, base) / REPORT
    try:
        body: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return body


def check_gate(action: Action, candidate: ArtifactRef, base: Path, force: bool) -> None:
    """canary/promote need a report that says the candidate is not worse (or --force)."""
    if action not in ("canary", "promote") or force:
        return
    report = read_report(candidate, base)
    if report is None:
        raise StepRefused(
            f"{candidate.path}: no {REPORT} (from `slm-router classifier retrain`) to show the "
            "candidate is not worse than the live classifier; --force to go on without one"
        )
    if not report.get("promotable", False):
        verdict = report.get("verdict", "?")
        raise StepRefused(
            f"{candidate.path}: the comparison report says {verdict!r}; --force to go on anyway"
        )


def default_validator(text: str, filename: str) -> None:
    """The loader's full check (raises PolicyLoadError)."""
    from router.config import parse_policy

    parse_policy(text, filename)


def actor_name(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    if os.environ.get("SLM_ROUTER_ACTOR"):
        return os.environ["SLM_ROUTER_ACTOR"]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


# ---- one step ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepRequest:
    action: Action
    policy: Path
    candidate: str | None = None
    percent: float | None = None
    force: bool = False
    apply: bool = True
    note: str = ""
    actor: str | None = None


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.rollout-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # atomic: a watcher never sees half a file


def _candidate_spec(path: str) -> Any:
    from classifiers.spec import ClassifierSpec

    return ClassifierSpec(kind="artifact", path=path)


async def _rollback_text(before: str, log: RolloutLog, force: bool) -> str:
    """The text from before the current rollout started (the latest step that introduced a
    rollout section since the last rollback), after checking nobody edited the file since."""
    entries = await log.entries(LOG_CAP)
    if not entries:
        raise StepRefused("the rollout log is empty: nothing to roll back")
    if entries[0].policy_sha256_after != text_sha(before) and not force:
        raise StepRefused(
            "the policy file changed since the last rollout step (edited by hand?); "
            "rolling back would discard that: --force to do it anyway"
        )
    for entry in entries:
        if entry.action == "rollback":
            break
        if entry.action in ("shadow", "canary") and ROLLOUT_KEY not in read_doc(
            entry.previous_policy
        ):
            return entry.previous_policy
    raise StepRefused("no rollout started since the last rollback: nothing to roll back")


async def _next_text(req: StepRequest, before: str, log: RolloutLog) -> str:
    if req.action == "shadow":
        if not req.candidate:
            raise StepRefused("shadow needs --candidate DIR")
        return step_shadow(before, _candidate_spec(req.candidate), req.percent or 100.0)
    if req.action == "canary":
        if req.percent is None:
            raise StepRefused("canary needs --percent N")
        spec = _candidate_spec(req.candidate) if req.candidate else None
        return step_canary(before, req.percent, spec)
    if req.action == "promote":
        return step_promote(before)
    return await _rollback_text(before, log, req.force)


async def run_step(
    req: StepRequest,
    log: RolloutLog,
    *,
    applier: Applier | None,
    validator: Validator = default_validator,
    base: Path | None = None,
) -> RolloutLogEntry:
    """Edit, check, write, apply, record; raises StepRefused (nothing changed) or the
    applier's error (file restored, nothing recorded)."""
    base = base or Path.cwd()
    before = req.policy.read_text(encoding="utf-8")
    try:
        after = await _next_text(req, before, log)
    except ValueError as exc:
        raise StepRefused(str(exc)) from None
    doc_before, doc_after = read_doc(before), read_doc(after)
    rollout = current_rollout(after) or current_rollout(before)
    candidate = (
        artifact_ref(rollout.candidate.model_dump(exclude_none=True), doc_after, base)
        if rollout is not None
        else None
    )
    if candidate is not None:
        check_gate(req.action, candidate, base, req.force)
    try:
        validator(after, str(req.policy))
    except Exception as exc:
        raise StepRefused(f"the edited policy would not load: {exc}") from None
    _write(req.policy, after)
    if req.apply and applier is not None:
        try:
            applier(req.policy)
        except BaseException:
            _write(req.policy, before)  # the running app and the file must agree
            raise
    entry = RolloutLogEntry(
        ts=time.time(),
        actor=actor_name(req.actor),
        action=req.action,
        policy_file=str(req.policy),
        mode=rollout.mode if rollout is not None and req.action in ("shadow", "canary") else None,
        percent=req.percent if req.action in ("shadow", "canary") else None,
        current=artifact_ref(doc_before.get(CLASSIFIER_KEY), doc_before, base),
        candidate=candidate,
        policy_sha256_before=text_sha(before),
        policy_sha256_after=text_sha(after),
        applied=bool(req.apply and applier is not None),
        forced=req.force,
        note=req.note,
        previous_policy=before,
    )
    await log.append(entry)
    return entry
