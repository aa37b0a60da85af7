"""Cost arithmetic (exact, integer nano-USD) and the spend report formats."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from experts.spec import PriceSpec
from router.finance.costs import (
    FREE,
    Price,
    estimate_nano,
    nano_to_usd,
    price_nano,
    request_cost,
    usd_to_nano,
)
from router.finance.ledger_types import CostRecord, TotalsRow
from router.finance.spend import parse_range, spend_csv, spend_json, spend_table

prices = st.decimals(min_value=0, max_value=100, places=4).map(float)


def reference_nano(
    p_in: float, p_out: float, hourly: float, tin: int, tout: int, secs: float
) -> int:
    """Independent reference: rational arithmetic on the decimal strings, rounded half-even."""
    usd = (
        Fraction(str(p_in)) * tin / 10**6
        + Fraction(str(p_out)) * tout / 10**6
        + Fraction(str(hourly)) * Fraction(str(secs)) / 3600
    )
    return round(usd * 10**9)


def test_known_prices() -> None:
    gpt_mini = Price(input_per_1m=0.15, output_per_1m=0.60)
    assert price_nano(gpt_mini, 1000, 500) == 450_000  # $0.00015 + $0.00030
    gpu = Price(per_replica_hour=2.5)
    assert price_nano(gpu, 10, 10, busy_seconds=1.44) == 1_000_000  # 2.5 $/h * 1.44 s
    assert price_nano(FREE, 10**6, 10**6, 100.0) == 0
    cost = request_cost(gpu, gpt_mini, 1000, 500, busy_seconds=1.44)
    assert (cost.cost_nano, cost.baseline_nano, cost.savings_nano) == (1_000_000, 450_000, -550_000)
    assert cost.cost_usd == Decimal("0.001")


def test_accepts_the_expert_price_spec_and_no_baseline() -> None:
    spec = PriceSpec(input_per_1m=3.0, output_per_1m=15.0)
    cost = request_cost(spec, None, 2_000, 1_000)
    assert cost.cost_nano == cost.baseline_nano == 6_000_000 + 15_000_000


@given(prices, prices, prices, st.integers(0, 10**7), st.integers(0, 10**6),
       st.floats(0, 3600, allow_nan=False).map(lambda x: round(x, 6)))  # fmt: skip
def test_matches_rational_reference(
    p_in: float, p_out: float, hourly: float, tin: int, tout: int, secs: float
) -> None:
    price = Price(p_in, p_out, hourly)
    assert price_nano(price, tin, tout, secs) == reference_nano(
        p_in, p_out, hourly, tin, tout, secs
    )


def test_float_prices_do_not_drift_over_many_requests() -> None:
    price = Price(input_per_1m=0.1, output_per_1m=0.2)  # 100 and 200 nano per token
    total = sum(price_nano(price, 7, 3) for _ in range(100_000))
    assert total == 100_000 * (700 + 600)
    assert nano_to_usd(total) == Decimal("0.13")


def test_conversions_and_validation() -> None:
    assert usd_to_nano("12.5") == 12_500_000_000
    assert usd_to_nano(0.1) == 100_000_000
    assert nano_to_usd(1) == Decimal("1E-9")
    assert estimate_nano(Price(1.0, 2.0), 100, 50) == price_nano(Price(1.0, 2.0), 100, 50)
    with pytest.raises(ValueError):
        price_nano(Price(1, 1), -1, 0)
    with pytest.raises(ValueError):
        price_nano(Price(1, 1, 1), 0, 0, busy_seconds=-0.1)


def test_cost_record_json_roundtrip() -> None:
    rec = CostRecord("r1", 1_741_000_000.25, "a", "e", "d", 5, 6, 7, 8, 9.5, None, 502, "timeout")
    assert CostRecord.from_json(rec.to_json()) == rec
    assert CostRecord.from_mapping(rec.to_hash()) == rec
    assert rec.day == "2025-03-03" and rec.is_error
    with pytest.raises(ValueError):
        CostRecord("", 0.0, "a", "e", "d")


ROWS = [
    TotalsRow(("alpha",), 3, 1, 100, 50, 1_234_567_891, 2_000_000_000, 300_000),
    TotalsRow(("beta",), 2, 0, 40, 20, 5, 0, 10_000),
]


def test_spend_json_is_exact_and_totals() -> None:
    body = spend_json(ROWS, "team", from_date=date(2025, 3, 1), to_date=date(2025, 3, 2))
    json.dumps(body)  # serialisable as-is
    alpha, beta = body["data"]
    assert alpha["team"] == "alpha" and alpha["cost_usd"] == "1.234567891"
    assert alpha["cost_nano"] == 1_234_567_891
    assert alpha["savings_usd"] == "0.765432109" and alpha["savings_pct"] == "38.27"
    assert alpha["mean_latency_ms"] == 100.0
    assert beta["savings_pct"] == ""  # no baseline: no percentage
    assert body["total"]["cost_nano"] == 1_234_567_896
    assert body["total"]["requests"] == 5
    assert (body["from"], body["to"], body["group_by"]) == ("2025-03-01", "2025-03-02", ["team"])


def test_spend_csv_and_table_agree() -> None:
    text = spend_csv(ROWS, "team")
    lines = list(csv.DictReader(io.StringIO(text)))
    assert [x["team"] for x in lines] == ["alpha", "beta"]
    assert sum(Decimal(x["cost_usd"]) for x in lines) == Decimal("1.234567896")
    table = spend_table(ROWS, "team")
    last = table.strip().splitlines()[-1].split()
    assert last[0] == "TOTAL" and last[1] == "5" and "1.234567896" in last
    cross = spend_csv([TotalsRow(("2025-03-01", "alpha"), 1)], "day,team")
    assert cross.splitlines()[0].startswith("day,team,requests")


def test_parse_range_and_dims_validation() -> None:
    assert parse_range("2025-03-01", None) == (date(2025, 3, 1), None)
    for bad in (("2025-13-01", None), ("2025-03-02", "2025-03-01")):
        with pytest.raises(ValueError):
            parse_range(*bad)
    with pytest.raises(ValueError):
        spend_csv(ROWS, "colour")
