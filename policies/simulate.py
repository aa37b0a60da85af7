"""Pure aggregation for `slm-router policy simulate`: plans + token counts + prices -> report.

The CLI replays prompts through the real classifier and decide(); this turns what came out into
the numbers ops read. Costs use per-token prices through the `cost` function the caller passes
(the gateway's own formula, router.finance.costs, so simulated and billed costs agree); experts
priced only per replica-hour cost 0 here (their cost depends on load, not on one request).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from policies.types import RoutePlan


class PriceInfo(Protocol):
    """USD per million tokens (experts.spec.PriceSpec fits)."""

    @property
    def input_per_1m(self) -> float: ...

    @property
    def output_per_1m(self) -> float: ...


# USD for (price, prompt tokens, completion tokens).
CostFn = Callable[[PriceInfo, int, int], float]


@dataclass(frozen=True)
class SimRecord:
    plan: RoutePlan
    label: str | None  # the expected domain (or expert), when the traffic file has one
    prompt_tokens: int
    completion_tokens: int  # an estimate: nothing is generated


@dataclass(frozen=True)
class SimulationReport:
    requests: int
    by_expert: dict[str, int]
    by_domain: dict[str, int]
    by_rule: dict[str, int]
    routing_accuracy: float | None  # None without labels
    labeled: int
    cost_per_1k: float  # USD per 1,000 requests, shadow copies included
    shadow_cost_per_1k: float
    baseline_cost_per_1k: float  # everything sent to the fallback
    savings: float  # 1 - cost / baseline (0 when the baseline costs nothing)
    fallback: str
    unpriced: tuple[str, ...] = field(default=())  # experts with no price entry

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_expert": self.by_expert,
            "by_domain": self.by_domain,
            "by_rule": self.by_rule,
            "routing_accuracy": self.routing_accuracy,
            "labeled": self.labeled,
            "cost_per_1k": self.cost_per_1k,
            "shadow_cost_per_1k": self.shadow_cost_per_1k,
            "baseline_cost_per_1k": self.baseline_cost_per_1k,
            "savings": self.savings,
            "fallback": self.fallback,
            "unpriced": list(self.unpriced),
        }


def routed_domain(plan: RoutePlan, oos_label: str) -> str:
    return oos_label if plan.out_of_scope else plan.domain


def _rule_name(entry: str) -> str:
    return entry.split(":", 1)[0]


def _sorted_counts(counter: Counter[str]) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def summarize(
    records: Iterable[SimRecord],
    prices: Mapping[str, PriceInfo],
    fallback: str,
    *,
    cost: CostFn,
    match: Literal["domain", "expert"] = "domain",
    oos_label: str = "out_of_scope",
) -> SimulationReport:
    """`cost` prices one request on one expert; an expert missing from `prices` costs 0 and
    is listed as unpriced. `match`: compare labels with the routed domain (out-of-scope plans
    count as `oos_label`) or with the chosen expert."""

    def request_cost(expert: str | None, prompt_tokens: int, completion_tokens: int) -> float:
        price = prices.get(expert) if expert is not None else None
        return 0.0 if price is None else cost(price, prompt_tokens, completion_tokens)

    by_expert: Counter[str] = Counter()
    by_domain: Counter[str] = Counter()
    by_rule: Counter[str] = Counter()
    n = labeled = correct = 0
    spent = shadow_cost = baseline = 0.0
    unpriced: set[str] = set()
    for rec in records:
        plan = rec.plan
        n += 1
        by_expert[plan.expert] += 1
        by_domain[routed_domain(plan, oos_label)] += 1
        by_rule.update({_rule_name(t) for t in plan.trace})
        tokens = (rec.prompt_tokens, rec.completion_tokens)
        for name in (plan.expert, plan.shadow, fallback):
            if name is not None and name not in prices:
                unpriced.add(name)
        spent += request_cost(plan.expert, *tokens)
        if plan.shadow is not None:
            shadow_cost += request_cost(plan.shadow, *tokens)
        baseline += request_cost(fallback, *tokens)
        if rec.label is not None:
            labeled += 1
            got = plan.expert if match == "expert" else routed_domain(plan, oos_label)
            correct += got == rec.label
    per_1k = 1000 / n if n else 0.0
    total = spent + shadow_cost
    return SimulationReport(
        requests=n,
        by_expert=_sorted_counts(by_expert),
        by_domain=_sorted_counts(by_domain),
        by_rule=_sorted_counts(by_rule),
        routing_accuracy=correct / labeled if labeled else None,
        labeled=labeled,
        cost_per_1k=total * per_1k,
        shadow_cost_per_1k=shadow_cost * per_1k,
        baseline_cost_per_1k=baseline * per_1k,
        savings=1 - total / baseline if baseline > 0 else 0.0,
        fallback=fallback,
        unpriced=tuple(sorted(unpriced)),
    )
