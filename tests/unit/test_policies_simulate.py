"""policies.simulate.summarize: the report fields `policy simulate --json` prints, priced with the
gateway's own formula (router.ops.simulate.usd over router.finance.costs)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from policies import CompiledPolicy, RequestContext, RoutingPolicy, Scores, decide
from policies.simulate import SimRecord, summarize
from policies.types import RoutePlan
from router.ops.simulate import usd


@dataclass(frozen=True)
class Price:
    input_per_1m: float
    output_per_1m: float


PRICES = {"moe": Price(10.0, 30.0), "code": Price(1.0, 2.0), "cand": Price(2.0, 2.0)}


def plan(
    expert: str,
    domain: str,
    *,
    oos: bool = False,
    shadow: str | None = None,
    trace: tuple[str, ...] = ("domain:x",),
) -> RoutePlan:
    return RoutePlan(expert, ("moe",), domain, "r", trace, shadow=shadow, out_of_scope=oos)


def test_costs_accuracy_and_counts() -> None:
    records = [
        SimRecord(plan("code", "code"), "code", 1000, 500),
        SimRecord(plan("code", "code"), "math", 1000, 500),
        SimRecord(plan("moe", "code", oos=True, trace=("out_of_scope",)), "out_of_scope", 2000, 0),
        SimRecord(plan("code", "code", shadow="cand"), None, 1000, 1000),
    ]
    r = summarize(records, PRICES, "moe", cost=usd)
    assert r.requests == 4
    assert r.by_expert == {"code": 3, "moe": 1}
    assert r.by_domain == {"code": 3, "out_of_scope": 1}
    assert r.by_rule == {"domain": 3, "out_of_scope": 1}
    assert r.labeled == 3 and r.routing_accuracy == pytest.approx(2 / 3)
    cost = 2 * (1000 * 1 + 500 * 2) + 2000 * 10 + (1000 * 1 + 1000 * 2)
    shadow = 1000 * 2 + 1000 * 2
    base = 2 * (1000 * 10 + 500 * 30) + 2000 * 10 + (1000 * 10 + 1000 * 30)
    assert r.shadow_cost_per_1k == pytest.approx(shadow / 1e6 * 1000 / 4)
    assert r.cost_per_1k == pytest.approx((cost + shadow) / 1e6 * 1000 / 4)
    assert r.baseline_cost_per_1k == pytest.approx(base / 1e6 * 1000 / 4)
    assert r.savings == pytest.approx(1 - (cost + shadow) / base)
    d = r.to_dict()
    for key in (
        "requests",
        "by_expert",
        "by_domain",
        "routing_accuracy",
        "cost_per_1k",
        "baseline_cost_per_1k",
        "savings",
    ):
        assert key in d


def test_no_labels_gives_null_accuracy_and_empty_input_is_zeroes() -> None:
    r = summarize([SimRecord(plan("code", "code"), None, 10, 10)], PRICES, "moe", cost=usd)
    assert r.routing_accuracy is None and r.to_dict()["routing_accuracy"] is None
    empty = summarize([], PRICES, "moe", cost=usd)
    assert (empty.requests, empty.cost_per_1k, empty.savings, empty.routing_accuracy) == (
        0,
        0,
        0,
        None,
    )


def test_match_on_expert_and_unpriced_experts() -> None:
    recs = [
        SimRecord(plan("code", "code"), "code", 10, 10),
        SimRecord(plan("free", "x"), "moe", 10, 10),
    ]
    r = summarize(recs, PRICES, "moe", match="expert", cost=usd)
    assert r.routing_accuracy == 0.5
    assert r.unpriced == ("free",)
    assert (
        summarize(recs, {}, "moe", cost=usd).savings == 0.0
    )  # nothing priced: no baseline to save against


def test_all_to_fallback_saves_nothing() -> None:
    recs = [SimRecord(plan("moe", "x"), None, 100, 100) for _ in range(3)]
    r = summarize(recs, PRICES, "moe", cost=usd)
    assert r.savings == pytest.approx(0.0) and r.cost_per_1k == pytest.approx(
        r.baseline_cost_per_1k
    )


def test_request_cost() -> None:
    assert usd(Price(2.0, 4.0), 1_000_000, 500_000) == pytest.approx(4.0)
    unpriced = summarize([SimRecord(plan("x", "x"), None, 10, 10)], {}, "moe", cost=usd)
    assert unpriced.cost_per_1k == 0.0


def test_end_to_end_with_decide() -> None:
    p = CompiledPolicy.build(
        RoutingPolicy.model_validate(
            {
                "fallback": "moe",
                "routes": [{"domain": "code", "experts": ["code"], "min_confidence": 0.5}],
            }
        )
    )
    rows = [
        ("code", 0.9, False, "code"),
        ("code", 0.2, False, "code"),
        ("chat", 0.9, True, "out_of_scope"),
    ]
    recs = [
        SimRecord(
            decide(p, Scores(lbl, conf, oos), RequestContext(request_id=str(i))), gold, 100, 50
        )
        for i, (lbl, conf, oos, gold) in enumerate(rows)
    ]
    r = summarize(recs, PRICES, "moe", cost=usd)
    assert r.by_expert == {"moe": 2, "code": 1}
    # the low-confidence one is routed to the fallback but its domain stays 'code'
    assert r.routing_accuracy == 1.0
    assert 0 < r.savings < 1
