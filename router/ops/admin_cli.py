"""`slm-router keys ...` and `slm-router spend ...`: admin commands straight against Redis
(which one: router.ops.redis_cli).

Also runnable on its own: `python -m router.ops.admin_cli keys create --team T`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.finance.costs import nano_to_usd
from router.ops.redis_cli import add_redis_args, run_with_redis

if TYPE_CHECKING:
    from redis.asyncio import Redis


def _usd_arg(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {text!r}")
    return value


def _count_arg(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def _team_arg(text: str) -> str:
    from router.finance.keys import check_name

    try:
        return check_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _label_arg(text: str) -> str:
    from router.finance.keys import check_name

    try:
        return check_name(text, "key", label=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ---- keys ----------------------------------------------------------------------------------------


def _keys_create(args: argparse.Namespace) -> int:
    from router.finance.keys import KeyStore

    async def body(redis: Redis) -> int:
        store = KeyStore(redis, prefix=args.prefix)
        created = await store.create_key(
            args.team,
            budget_usd=args.budget_usd,
            period=args.period,
            rpm=args.rpm,
            tpm=args.tpm,
            admin=args.admin,
            name=args.name,
        )
        info = created.info
        # The key alone on stdout (KEY=$(slm-router keys create ...)); the rest on stderr.
        print(created.plaintext)
        extras = [f"rpm={info.rpm or 'unlimited'}", f"tpm={info.tpm or 'unlimited'}"]
        if args.budget_usd is not None:
            extras.append(f"budget=${nano_to_usd(_nano(args.budget_usd))}/{args.period}")
        if info.admin:
            extras.append("admin")
        print(
            f"created {info.key_id} for team {info.team} ({', '.join(extras)}); "
            "the key is shown once: store it now",
            file=sys.stderr,
        )
        return 0

    return run_with_redis(args, body)


def _nano(usd: Decimal) -> int:
    from router.finance.costs import usd_to_nano

    return usd_to_nano(usd)


def _keys_list(args: argparse.Namespace) -> int:
    from router.finance.keys import KeyStore

    async def body(redis: Redis) -> int:
        store = KeyStore(redis, prefix=args.prefix)
        keys = await store.list_keys(team=args.team)
        if not args.all:
            keys = [k for k in keys if not k.revoked]
        budgets = {t: await store.budget(t) for t in sorted({k.team for k in keys})}
        if args.json:
            rows = [_key_json(k, budgets.get(k.team)) for k in keys]
            print(json.dumps(rows, indent=2))
            return 0
        print(_key_table(keys, budgets), end="")
        return 0

    return run_with_redis(args, body)


def _key_json(k: Any, budget: Any) -> dict[str, Any]:
    return {
        "key_id": k.key_id,
        "team": k.team,
        "name": k.name,
        "admin": k.admin,
        "rpm": k.rpm,
        "tpm": k.tpm,
        "revoked": k.revoked,
        "created_at": k.created_at,
        "team_budget_usd": str(budget.budget_usd) if budget else None,
        "team_budget_period": budget.period if budget else None,
    }


def _key_table(keys: Sequence[Any], budgets: dict[str, Any]) -> str:
    import time

    header = ["key_id", "team", "name", "admin", "rpm", "tpm", "team_budget", "created", "state"]
    lines = [header]
    for k in sorted(keys, key=lambda k: (k.team, k.created_at, k.key_id)):
        b = budgets.get(k.team)
        lines.append(
            [
                k.key_id,
                k.team,
                k.name or "-",
                "yes" if k.admin else "no",
                str(k.rpm or "-"),
                str(k.tpm or "-"),
                f"${b.budget_usd}/{b.period}" if b else "-",
                time.strftime("%Y-%m-%d %H:%M", time.gmtime(k.created_at)),
                "revoked" if k.revoked else "active",
            ]
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines
    ]
    if len(lines) == 1:
        out.append("(no keys)")
    return "\n".join(out) + "\n"


def _keys_revoke(args: argparse.Namespace) -> int:
    from router.finance.keys import KeyStore

    async def body(redis: Redis) -> int:
        if await KeyStore(redis, prefix=args.prefix).revoke(args.key_id):
            print(f"revoked {args.key_id} (replicas stop accepting it within seconds)")
            return 0
        print(f"error: no key with id {args.key_id}", file=sys.stderr)
        return 1

    return run_with_redis(args, body)


def _keys_budget(args: argparse.Namespace) -> int:
    from router.finance.keys import KeyStore

    async def body(redis: Redis) -> int:
        store = KeyStore(redis, prefix=args.prefix)
        await store.set_budget(args.team, None if args.clear else args.budget_usd, args.period)
        b = await store.budget(args.team)
        print(f"team {args.team}: " + (f"${b.budget_usd} per {b.period}" if b else "no budget"))
        return 0

    return run_with_redis(args, body)


def add_key_subcommands(sub: Any) -> None:
    """`keys create|list|revoke|budget` on the subparsers of a `keys` command."""
    p = sub.add_parser("create", help="create an API key (printed once) for a team")
    p.add_argument("--team", required=True, type=_team_arg)
    p.add_argument("--budget-usd", type=_usd_arg, help="set the team's budget (shared by its keys)")
    p.add_argument("--period", choices=("day", "month"), default="month")
    p.add_argument("--rpm", type=_count_arg, default=0, help="requests per minute (0: unlimited)")
    p.add_argument("--tpm", type=_count_arg, default=0, help="tokens per minute (0: unlimited)")
    p.add_argument("--admin", action="store_true", help="may read spend and manage the gateway")
    p.add_argument("--name", default="", type=_label_arg, help="a label for humans")
    add_redis_args(p)
    p.set_defaults(func=_keys_create)

    p = sub.add_parser("list", help="list keys (never the keys themselves: only hashes are kept)")
    p.add_argument("--team", type=_team_arg)
    p.add_argument("--all", action="store_true", help="include revoked keys")
    p.add_argument("--json", action="store_true")
    add_redis_args(p)
    p.set_defaults(func=_keys_list)

    p = sub.add_parser("revoke", help="revoke a key by its id (key_...)")
    p.add_argument("key_id")
    add_redis_args(p)
    p.set_defaults(func=_keys_revoke)

    p = sub.add_parser("budget", help="set or clear a team's budget")
    p.add_argument("--team", required=True, type=_team_arg)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--budget-usd", type=_usd_arg)
    group.add_argument("--clear", action="store_true")
    p.add_argument("--period", choices=("day", "month"), default="month")
    add_redis_args(p)
    p.set_defaults(func=_keys_budget)


# ---- spend ---------------------------------------------------------------------------------------


def _spend_report(args: argparse.Namespace) -> int:
    from router.finance.ledger import Ledger
    from router.finance.spend import parse_dims, parse_range, spend_csv, spend_table

    try:
        group_by = ",".join(parse_dims(args.group_by))
        lo, hi = parse_range(args.from_, args.to)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def body(redis: Redis) -> int:
        # Read-only: the spool path is required by Ledger but never written by queries.
        spool = Path(tempfile.gettempdir()) / "slm-router-cli-unused.jsonl"
        ledger = Ledger("", spool, prefix=args.prefix, client=redis)
        rows = await ledger.totals(group_by, lo, hi, args.team)
        print(spend_csv(rows, group_by) if args.csv else spend_table(rows, group_by), end="")
        return 0

    return run_with_redis(args, body)


def add_spend_subcommands(sub: Any) -> None:
    """`spend report` on the subparsers of a `spend` command."""
    p = sub.add_parser("report", help="spend totals, the same table as GET /v1/spend")
    p.add_argument(
        "--group-by",
        default="team",
        help="team|expert|domain|day, or several joined by commas (e.g. day,team)",
    )
    p.add_argument("--from", dest="from_", metavar="YYYY-MM-DD", help="first UTC day (inclusive)")
    p.add_argument("--to", metavar="YYYY-MM-DD", help="last UTC day (inclusive)")
    p.add_argument("--team", type=_team_arg)
    p.add_argument("--csv", action="store_true", help="CSV, as GET /v1/spend.csv")
    add_redis_args(p)
    p.set_defaults(func=_spend_report)


# ---- standalone ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slm-router", description="keys and spend admin")
    sub = parser.add_subparsers(dest="command", required=True)
    keys = sub.add_parser("keys", help="API keys, teams and budgets")
    add_key_subcommands(keys.add_subparsers(dest="keys_command", required=True))
    spend = sub.add_parser("spend", help="spend reports from the ledger")
    add_spend_subcommands(spend.add_subparsers(dest="spend_command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
