"""`slm-router classifier-rollout shadow|canary|promote|rollback|status|log`.

Each step is router.continuous.rollout.run_step, applied through the hot-reload path
(router.serving.reload.apply_file: a Serve redeploy, no restart) and recorded in Redis
(`{p}:rollout:log`). `--no-apply` only edits the file (for a gateway run with `serve --watch`).

    slm-router classifier-rollout shadow   --candidate DIR [--percent 100]
    slm-router classifier-rollout canary   --percent 5 [--candidate DIR]
    slm-router classifier-rollout canary   --percent 25          # widen (same users stay in)
    slm-router classifier-rollout promote
    slm-router classifier-rollout rollback                       # back to before the rollout
    slm-router classifier-rollout status | log [--json]

Gate: `canary` and `promote` need the candidate's comparison report to say it is not worse than
the live classifier; `--force` overrides (and is recorded). Rollback refuses when the file was
edited by hand since the last step (`--force` overrides).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.continuous.rollout import (
    CLASSIFIER_KEY,
    Applier,
    StepRefused,
    StepRequest,
    artifact_ref,
    current_rollout,
    read_doc,
    run_step,
)
from router.continuous.rollout_log import RedisRolloutLog, RolloutLogEntry
from router.ops.redis_cli import add_redis_args, run_with_redis
from router.serving.gateway_file import EXIT_NO_GATEWAY, NoGateway, resolve_address

if TYPE_CHECKING:
    from redis.asyncio import Redis


# ---- argparse ------------------------------------------------------------------------------


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
        p.add_argument(
            "--address", help="Ray address (default: $RAY_ADDRESS, else the running gateway's)"
        )
        p.add_argument("--note", default="", help="why, for the log")
        p.add_argument("--actor", help="who (default: $SLM_ROUTER_ACTOR, else user@host)")
        add_redis_args(p)
        p.set_defaults(func=_step, action=action)

    p = sub.add_parser("status", help="the policy's classifier and rollout, and recent steps")
    _policy_arg(p)
    p.add_argument("--json", action="store_true")
    add_redis_args(p)
    p.set_defaults(func=_status)

    p = sub.add_parser("log", help="every recorded rollout step, newest first")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    add_redis_args(p)
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

    applier = None
    if not args.no_apply:  # the running gateway's runtime file unless --address (issue 20)
        try:  # before Redis: no gateway is said at once
            applier = default_applier(resolve_address(args.address))
        except NoGateway as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_NO_GATEWAY

    async def body(redis: Redis) -> int:
        log = RedisRolloutLog(redis, args.prefix)
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


def default_applier(address: str | None) -> Applier:
    def apply(path: Path) -> object:
        from router.serving.reload import apply_file

        return apply_file(path, address)

    return apply
