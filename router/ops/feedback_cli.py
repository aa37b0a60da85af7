"""`slm-router feedback export`: feedback on routed requests as labelled training rows (JSONL),
for `slm-router classifier retrain --feedback`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.ops.redis_cli import DEFAULT_PREFIX, add_redis_args, run_with_redis

if TYPE_CHECKING:
    from redis.asyncio import Redis


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
    add_redis_args(p)
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
