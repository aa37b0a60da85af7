"""Ledger rows -> the spend API's JSON and CSV, and the CLI's table. Pure functions.

Money leaves as integer nano-USD (`*_nano`, exact) and as decimal strings (`*_usd`, exact, nine
places): JSON floats would round, and finance compares these numbers to invoices.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from router.finance.budgets import BudgetStatus
from router.finance.costs import nano_to_usd
from router.finance.ledger_types import METRICS, CostRecord, TotalsRow, parse_dims

__all__ = [
    "budget_json",
    "dashboard_json",
    "grand_total",
    "parse_dims",
    "parse_range",
    "record_json",
    "row_json",
    "spend_csv",
    "spend_json",
    "spend_table",
    "usd",
]  # fmt: skip

_NINE = Decimal("0.000000001")
CSV_METRIC_COLUMNS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "baseline_usd",
    "savings_usd",
    "savings_pct",
    "mean_latency_ms",
)


def parse_range(from_: str | None, to: str | None) -> tuple[date | None, date | None]:
    """ISO dates (inclusive, UTC days); ValueError with a message fit for a 400."""
    try:
        lo = date.fromisoformat(from_) if from_ else None
        hi = date.fromisoformat(to) if to else None
    except ValueError as exc:
        raise ValueError(f"from/to must be ISO dates (YYYY-MM-DD): {exc}") from exc
    if lo and hi and lo > hi:
        raise ValueError("`from` is after `to`")
    return lo, hi


def usd(nano: int) -> str:
    # `f` format: str(Decimal) switches to 5E-9 below a micro-dollar.
    return f"{nano_to_usd(nano).quantize(_NINE):f}"


def _savings_pct(row: TotalsRow) -> str:
    if row.baseline_nano <= 0:
        return ""
    pct = Decimal(row.baseline_nano - row.cost_nano) * 100 / Decimal(row.baseline_nano)
    return str(pct.quantize(Decimal("0.01")))


def grand_total(rows: Sequence[TotalsRow]) -> TotalsRow:
    sums = {m: sum(getattr(r, m) for r in rows) for m in METRICS}
    return TotalsRow(group=(), **sums)


def row_json(row: TotalsRow, dims: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = dict(zip(dims, row.group, strict=True))
    out.update(
        requests=row.requests,
        errors=row.errors,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cost_nano=row.cost_nano,
        baseline_nano=row.baseline_nano,
        savings_nano=row.baseline_nano - row.cost_nano,
        cost_usd=usd(row.cost_nano),
        baseline_usd=usd(row.baseline_nano),
        savings_usd=usd(row.baseline_nano - row.cost_nano),
        savings_pct=_savings_pct(row),
        mean_latency_ms=round(row.mean_latency_ms, 3),
    )
    return out


def spend_json(
    rows: Sequence[TotalsRow],
    group_by: str | Sequence[str],
    *,
    from_date: date | None = None,
    to_date: date | None = None,
    team: str | None = None,
) -> dict[str, Any]:
    """The body of GET /v1/spend."""
    dims = parse_dims(group_by)
    total = row_json(grand_total(rows), ())
    return {
        "object": "spend.report",
        "group_by": list(dims),
        "from": from_date.isoformat() if from_date else None,
        "to": to_date.isoformat() if to_date else None,
        "team": team,
        "currency": "USD",
        "data": [row_json(r, dims) for r in rows],
        "total": total,
    }


def _csv_cells(row: TotalsRow) -> list[str]:
    return [
        str(row.requests),
        str(row.errors),
        str(row.input_tokens),
        str(row.output_tokens),
        usd(row.cost_nano),
        usd(row.baseline_nano),
        usd(row.baseline_nano - row.cost_nano),
        _savings_pct(row),
        f"{row.mean_latency_ms:.3f}",
    ]


def spend_csv(rows: Sequence[TotalsRow], group_by: str | Sequence[str]) -> str:
    """The body of GET /v1/spend.csv: one line per group, no totals line (sum it yourself)."""
    dims = parse_dims(group_by)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*dims, *CSV_METRIC_COLUMNS])
    for row in rows:
        writer.writerow([*(_csv_text(g) for g in row.group), *_csv_cells(row)])
    return buf.getvalue()


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_text(cell: str) -> str:
    """A text cell a spreadsheet will not run: one starting like a formula gets a leading quote
    (OWASP's advice). Only the group cells are text; the metric cells are numbers we print."""
    text = str(cell)
    return "'" + text if text.startswith(_FORMULA_START) else text


def spend_table(rows: Sequence[TotalsRow], group_by: str | Sequence[str]) -> str:
    """A fixed-width table for `slm-router spend report`, with a total line."""
    dims = parse_dims(group_by)
    header = [*dims, "requests", "errors", "tokens_in", "tokens_out", "cost_usd",
              "baseline_usd", "savings_usd", "savings_%", "mean_ms"]  # fmt: skip
    body = [[*r.group, *_csv_cells(r)] for r in rows]
    total = grand_total(rows)
    footer = ["TOTAL", *[""] * (len(dims) - 1), *_csv_cells(total)]
    table = [header, *body, footer]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    numeric_from = len(dims)

    def fmt(line: list[str]) -> str:
        cells = [
            c.rjust(w) if i >= numeric_from else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *map(fmt, body), rule, fmt(footer)]) + "\n"


def record_json(rec: CostRecord) -> dict[str, Any]:
    """One request for the dashboard's "most expensive requests" (no prompt text: none is kept)."""
    return {
        "request_id": rec.request_id,
        "ts": rec.ts,
        "day": rec.day,
        "team": rec.team,
        "key_id": rec.key_id,
        "expert": rec.expert,
        "domain": rec.domain,
        "model": rec.model,
        "input_tokens": rec.input_tokens,
        "output_tokens": rec.output_tokens,
        "cost_nano": rec.cost_nano,
        "cost_usd": usd(rec.cost_nano),
        "baseline_usd": usd(rec.baseline_nano),
        "latency_ms": rec.latency_ms,
        "status": rec.status,
        "route_reason": rec.route_reason,
    }


def budget_json(status: BudgetStatus) -> dict[str, Any]:
    return {
        "team": status.team,
        "period": status.period,
        "period_id": status.period_id,
        "budget_usd": usd(status.budget_nano) if status.budget_nano is not None else None,
        "spent_usd": usd(status.spent_nano),
        "in_flight_usd": usd(status.reserved_nano),
        "burn": round(status.burn, 6) if status.burn is not None else None,
    }


def dashboard_json(
    *,
    by_day: Sequence[TotalsRow],
    by_team: Sequence[TotalsRow],
    by_expert: Sequence[TotalsRow],
    by_domain: Sequence[TotalsRow],
    top: Sequence[CostRecord],
    latency: dict[str, dict[str, float]],
    budgets: Sequence[BudgetStatus],
    from_date: date | None = None,
    to_date: date | None = None,
    team: str | None = None,
) -> dict[str, Any]:
    """Everything the finance dashboard draws, from the ledger's and the limiter's answers."""
    return {
        "from": from_date.isoformat() if from_date else None,
        "to": to_date.isoformat() if to_date else None,
        "team": team,
        "total": row_json(grand_total(by_day), ()),
        "by_day": [row_json(r, ("day",)) for r in by_day],
        "by_team": [row_json(r, ("team",)) for r in by_team],
        "by_expert": [row_json(r, ("expert",)) for r in by_expert],
        "by_domain": [row_json(r, ("domain",)) for r in by_domain],
        "top_requests": [record_json(r) for r in top],
        "latency_ms": {
            e: {k: round(v, 3) for k, v in pct.items()} for e, pct in sorted(latency.items())
        },
        "budgets": [budget_json(b) for b in budgets],
    }
