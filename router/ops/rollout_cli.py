"""`slm-router feedback export` and `slm-router classifier-rollout shadow|canary|promote|rollback`.

A rollout step edits the policy file's `classifier_rollout:` (or `classifier:`) section, checks
the result as `policy validate` would, writes it, applies it through the hot-reload path
(router.serving.reload.apply_file: a Serve redeploy, no restart) and records who/when/which artifact
versions in Redis (`{p}:rollout:log`). If the apply fails the file is put back as it was and
nothing is recorded. `--no-apply` only edits the file (for a gateway run with `serve --watch`).

    slm-router classifier-rollout shadow   --candidate DIR [--percent 100]
    slm-router classifier-rollout canary   --percent 5 [--candidate DIR]
    slm-router classifier-rollout canary   --percent 25          # widen (same users stay in)
    slm-router classifier-rollout promote
    slm-router classifier-rollout rollback                       # back to before the rollout
    slm-router classifier-rollout status | log [--json]

Gate: `canary` and `promote` need the candidate's comparison report (DIR/comparison.json, from
`slm-router classifier retrain`) to say it is not worse than the live classifier; `--force`
overrides (and is recorded). `shadow` is always allowed: it cannot change an answer.
Rollback refuses when the file was edited by hand since the last step (`--force` overrides).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from router.continuous.rollout import (
    CLASSIFIER_KEY,
    ROLLOUT_KEY,
    Action,
    ArtifactRef,
    RolloutLogEntry,
    current_rollout,
    read_doc,
    set_block,
    step_canary,
    step_promote,
    step_shadow,
    text_sha,
)
from router.continuous.spec import ClassifierRollout
from router.ops.admin_cli import run_with_redis

if TYPE_CHECKING:
    from redis.asyncio import Redis

DEFAULT_PREFIX = "slm"
LOG_CAP = 1000
REPORT = "comparison.json"
Applier = Callable[[Path], object]
Validator = Callable[[str, str], None]


class StepRefused(Exception):
    """A step that must not run; the message says why and how to override."""


# ---- the log -------------------------------------------------------------------------------


class RolloutLog(Protocol):
    async def append(self, entry: RolloutLogEntry) -> None: ...

    async def entries(self, limit: int = 50) -> list[RolloutLogEntry]:
        """Newest first."""
        ...


class RedisRolloutLog:
    def __init__(self, redis: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self.redis = redis
        self.key = f"{prefix}:rollout:log"

    async def append(self, entry: RolloutLogEntry) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self.key, entry.model_dump_json())
            pipe.ltrim(self.key, 0, LOG_CAP - 1)
            await pipe.execute()

    async def entries(self, limit: int = 50) -> list[RolloutLogEntry]:
        raw = await self.redis.lrange(self.key, 0, limit - 1)  # type: ignore[misc]
        return [RolloutLogEntry.model_validate_json(r) for r in raw]


class MemoryRolloutLog:
    """The same log in a list: for tests and for `--no-redis` dry runs."""

    def __init__(self) -> None:
        self.items: list[RolloutLogEntry] = []

    async def append(self, entry: RolloutLogEntry) -> None:
        self.items.insert(0, entry)

    async def entries(self, limit: int = 50) -> list[RolloutLogEntry]:
        return self.items[:limit]


# ---- artifacts and checks ------------------------------------------------------------------


def artifact_ref(section: dict[str, Any] | None, doc: dict[str, Any], base: Path) -> ArtifactRef:
    """Identify a classifier section: artifacts by their metadata, `examples` by the hash of
    the routes' examples (what ExamplesClassifier reports as its version)."""
    section = dict(section or {})
    kind = str(section.get("kind", "examples"))
    path = section.get("path")
    if path:
        from classifiers.artifact import read_metadata

        try:
            meta = read_metadata(_resolve(str(path), base))
            return ArtifactRef(
                kind=kind, path=str(path), version=meta.version, data_sha256=meta.data_sha256
            )
        except (OSError, ValueError):
            return ArtifactRef(kind=kind, path=str(path))
    if kind == "examples":
        from classifiers.text import sha256_json

        sha = sha256_json(_route_examples(doc))
        return ArtifactRef(kind=kind, version=sha[:12], data_sha256=sha)
    return ArtifactRef(kind=kind)


def _route_examples(doc: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for route in (doc.get("routing") or {}).get("routes") or []:
        texts = [str(t) for t in route.get("examples") or []]
        if route.get("description"):
            texts.append(str(route["description"]))
        if texts:
            out[str(route["domain"])] = texts
    return out


def _resolve(path: str, base: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base / p


def read_report(candidate: ArtifactRef, base: Path) -> dict[str, Any] | None:
    if not candidate.path:
        return None
    path = _resolve(candidate.path, base) / REPORT
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
    """The loader's full check. Until AppConfig has a `classifier_rollout` field, that section
    is checked on its own and the rest of the file by the loader."""
    from router.config import AppConfig, parse_policy

    if ROLLOUT_KEY not in AppConfig.model_fields and ROLLOUT_KEY in read_doc(text):
        ClassifierRollout.model_validate(read_doc(text)[ROLLOUT_KEY])
        text = set_block(text, ROLLOUT_KEY, None)
    parse_policy(text, filename)


def default_applier(address: str | None) -> Applier:
    def apply(path: Path) -> object:
        from router.serving.reload import apply_file

        return apply_file(path, address)

    return apply


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


# ---- argparse ------------------------------------------------------------------------------


def _add_redis_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", help="default: $REDIS_URL, else the embedded server")
    p.add_argument("--data-dir", type=Path, default=None, help="the embedded server's data dir")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help=argparse.SUPPRESS)


def _policy_arg(p: argparse.ArgumentParser) -> None:
    from router.config import default_policy_path

    p.add_argument("--policy", type=Path, default=default_policy_path(), help="the policy file")


def add_rollout_subcommands(sub: Any) -> None:
    """`classifier-rollout shadow|canary|promote|rollback|status|log`."""
    helps = {
        "shadow": "score live traffic with a candidate beside the live classifier (no effect)",
        "canary": "route N%% of users (sticky) with the candidate",
        "promote": "make the candidate the live classifier",
        "rollback": "restore the policy from before the rollout started",
    }
    for action, help_text in helps.items():
        p = sub.add_parser(action, help=help_text)
        _policy_arg(p)
        if action in ("shadow", "canary"):
            p.add_argument("--candidate", help="candidate artifact directory")
            p.add_argument("--percent", type=float, default=100.0 if action == "shadow" else None)
        p.add_argument("--force", action="store_true", help="override the gate (recorded)")
        p.add_argument("--no-apply", action="store_true", help="edit the file only")
        p.add_argument("--address", help="Ray address (default: $RAY_ADDRESS, else auto)")
        p.add_argument("--note", default="", help="why, for the log")
        p.add_argument("--actor", help="who (default: $SLM_ROUTER_ACTOR, else user@host)")
        _add_redis_args(p)
        p.set_defaults(func=_step, action=action)

    p = sub.add_parser("status", help="the policy's classifier and rollout, and recent steps")
    _policy_arg(p)
    p.add_argument("--json", action="store_true")
    _add_redis_args(p)
    p.set_defaults(func=_status)

    p = sub.add_parser("log", help="every recorded rollout step, newest first")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    _add_redis_args(p)
    p.set_defaults(func=_log)


def _step(args: argparse.Namespace) -> int:
    req = StepRequest(
        action=args.action,
        policy=args.policy,
        candidate=getattr(args, "candidate", None),
        percent=getattr(args, "percent", None),
        force=args.force,
        apply=not args.no_apply,
        note=args.note,
        actor=args.actor,
    )

    async def body(redis: Redis) -> int:
        log = RedisRolloutLog(redis, args.prefix)
        applier = None if args.no_apply else default_applier(args.address)
        try:
            entry = await run_step(req, log, applier=applier)
        except StepRefused as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 1
        print(_describe(entry))
        return 0

    return run_with_redis(args, body)


def _describe(e: RolloutLogEntry) -> str:
    when = datetime.fromtimestamp(e.ts, UTC).isoformat(timespec="seconds")
    cand = f" candidate {e.candidate.version or e.candidate.path}" if e.candidate else ""
    pct = f" {e.percent:g}%" if e.percent is not None else ""
    flags = (" (forced)" if e.forced else "") + ("" if e.applied else " (file only)")
    return (
        f"{when} {e.actor}: {e.action}{pct}{cand}; live {e.current.kind} "
        f"{e.current.version or e.current.path or ''}{flags}"
    ).rstrip()


def _status(args: argparse.Namespace) -> int:
    text = args.policy.read_text(encoding="utf-8")
    doc = read_doc(text)
    rollout = current_rollout(text)
    base = Path.cwd()
    body: dict[str, Any] = {
        "policy": str(args.policy),
        "classifier": artifact_ref(doc.get(CLASSIFIER_KEY), doc, base).model_dump(),
        "rollout": None if rollout is None else rollout.model_dump(exclude_none=True),
    }

    async def recent(redis: Redis) -> int:
        entries = await RedisRolloutLog(redis, args.prefix).entries(5)
        body["recent"] = [e.summary() for e in entries]
        if args.json:
            print(json.dumps(body, indent=2))
        else:
            print(f"live: {body['classifier']}")
            print(f"rollout: {body['rollout'] or 'none'}")
            for e in entries:
                print("  " + _describe(e))
        return 0

    return run_with_redis(args, recent)


def _log(args: argparse.Namespace) -> int:
    async def body(redis: Redis) -> int:
        entries = await RedisRolloutLog(redis, args.prefix).entries(args.limit)
        for e in entries:
            print(json.dumps(e.summary()) if args.json else _describe(e))
        return 0

    return run_with_redis(args, body)


# ---- feedback export -----------------------------------------------------------------------


def _when(text: str) -> float:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {text!r}") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def add_feedback_subcommands(sub: Any) -> None:
    """`feedback export --out FILE.jsonl`."""
    p = sub.add_parser("export", help="feedback as labelled training rows (JSONL)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.jsonl")
    p.add_argument("--since", type=_when, help="ISO date/time (UTC unless given)")
    p.add_argument("--until", type=_when)
    p.add_argument("--all", action="store_true", help="also rows without text or label")
    _add_redis_args(p)
    p.set_defaults(func=_export)


async def export_rows(
    redis: Redis,
    out: Path,
    prefix: str = DEFAULT_PREFIX,
    *,
    since: float | None = None,
    until: float | None = None,
    labelled_only: bool = True,
) -> int:
    from router.continuous.feedback import FeedbackStore

    async def no_records(_: str) -> None:
        return None

    store = FeedbackStore(redis, no_records, prefix=prefix)
    rows = await store.export(since, until, labelled_only=labelled_only)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)


def _export(args: argparse.Namespace) -> int:
    async def body(redis: Redis) -> int:
        n = await export_rows(
            redis,
            args.out,
            args.prefix,
            since=args.since,
            until=args.until,
            labelled_only=not args.all,
        )
        print(f"wrote {n} row(s) to {args.out}", file=sys.stderr)
        return 0

    return run_with_redis(args, body)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry until the lead mounts the commands: `python -m router.ops.rollout_cli
    classifier-rollout shadow ...` / `python -m router.ops.rollout_cli feedback export ...`."""
    parser = argparse.ArgumentParser(prog="slm-router")
    sub = parser.add_subparsers(dest="command", required=True)
    add_rollout_subcommands(
        sub.add_parser("classifier-rollout").add_subparsers(dest="rollout_command", required=True)
    )
    add_feedback_subcommands(
        sub.add_parser("feedback").add_subparsers(dest="feedback_command", required=True)
    )
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
