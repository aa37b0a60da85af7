"""Known traffic for the spend API and dashboard tests, and independent sums over it.

The expected figures are computed here from the records themselves (Decimal arithmetic, nearest
rank by hand), never through the ledger or router.finance.spend, so a bug there shows up as a
mismatch.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from router.finance.ledger_types import CostRecord

TEAMS = ("alpha", "beta", "gamma")
EXPERTS = ("code-small", "math-small", "generalist")
DOMAINS = ("code", "math", "general")
DAYS = (date(2025, 3, 1), date(2025, 3, 2), date(2025, 3, 4))


def make_records(n: int, seed: int, prefix: str = "r") -> list[CostRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        day = rng.choice(DAYS)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        out.append(
            CostRecord(
                request_id=f"{prefix}{i:04d}",
                ts=start + rng.randint(0, 86_399) + rng.randint(0, 999) / 1000,
                team=rng.choice(TEAMS),
                expert=rng.choice(EXPERTS),
                domain=rng.choice(DOMAINS),
                input_tokens=rng.randint(1, 4000),
                output_tokens=rng.randint(0, 1000),
                # Odd sizes so that nine-decimal strings and thousands separators both matter.
                cost_nano=rng.randint(0, 2_500_000_000),
                baseline_nano=rng.randint(0, 4_000_000_000),
                latency_ms=round(rng.uniform(5, 900), 3),
                status=rng.choice((200, 200, 200, 502)),
                model=rng.choice(EXPERTS),
            )
        )
    return out


def usd9(nano: int) -> str:
    """Nano-USD -> the exact nine-decimal string, by integer arithmetic."""
    sign = "-" if nano < 0 else ""
    whole, frac = divmod(abs(nano), 10**9)
    return f"{sign}{whole}.{frac:09d}"


@dataclass
class Sums:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nano: int = 0
    baseline_nano: int = 0

    def add(self, r: CostRecord) -> None:
        self.requests += 1
        self.errors += int(r.status >= 400)
        self.input_tokens += r.input_tokens
        self.output_tokens += r.output_tokens
        self.cost_nano += r.cost_nano
        self.baseline_nano += r.baseline_nano

    @property
    def savings_nano(self) -> int:
        return self.baseline_nano - self.cost_nano

    @property
    def savings_pct(self) -> str:
        if self.baseline_nano <= 0:
            return ""
        pct = Decimal(self.savings_nano) * 100 / Decimal(self.baseline_nano)
        return str(pct.quantize(Decimal("0.01")))


def select(
    recs: Iterable[CostRecord],
    lo: date | None = None,
    hi: date | None = None,
    team: str | None = None,
) -> list[CostRecord]:
    def keep(r: CostRecord) -> bool:
        d = date.fromisoformat(r.day)
        return (lo is None or d >= lo) and (hi is None or d <= hi) and team in (None, r.team)

    return [r for r in recs if keep(r)]


def group(recs: Iterable[CostRecord], dim: str) -> dict[str, Sums]:
    key: Callable[[CostRecord], str] = (
        (lambda r: r.day) if dim == "day" else (lambda r: str(getattr(r, dim)))
    )
    out: dict[str, Sums] = defaultdict(Sums)
    for r in recs:
        out[key(r)].add(r)
    return dict(out)


def total(recs: Iterable[CostRecord]) -> Sums:
    s = Sums()
    for r in recs:
        s.add(r)
    return s


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * p / 100)) - 1]


def latency(recs: Iterable[CostRecord]) -> dict[str, dict[str, float]]:
    per: dict[str, list[float]] = defaultdict(list)
    for r in recs:
        per[r.expert].append(r.latency_ms)
    return {
        e: {"p50": nearest_rank(v, 50), "p95": nearest_rank(v, 95), "samples": len(v)}
        for e, v in per.items()
    }
