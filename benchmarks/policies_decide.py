"""Per-request cost of policies.decide(): compiled vs not, by prompt length and rule count.

.venv/bin/python benchmarks/policies_decide.py --out bench-policies.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import timeit
from typing import Any

from policies import CompiledPolicy, ExpertStats, RequestContext, RoutingPolicy, Scores, decide


def build_policy(n_overrides: int) -> RoutingPolicy:
    return RoutingPolicy.model_validate(
        {
            "fallback": "moe",
            "routes": [
                {"domain": f"d{i}", "experts": ["a", "b"],
                 "escalate": {"threshold": 0.7, "expert": "c"}, "cheap_expert": "b"}
                for i in range(10)
            ],
            "overrides": [
                {"name": f"kw{i}", "expert": "a", "keywords": [f"keyword{i}", f"phrase {i}"]}
                for i in range(n_overrides)
            ]
            + [{"name": "rx", "expert": "a", "regex": r"\bticket-\d{6}\b"}],
            "splits": [{"domain": "d1", "arms": [{"expert": "a", "weight": 0.5},
                                                 {"expert": "b", "weight": 0.5}]}],
            "shadow": [{"expert": "c", "percent": 10}],
            "budget_downgrade": {"used_fraction": 0.8},
        }
    )  # fmt: skip


def median_us(fn: Any, number: int, repeat: int) -> float:
    return statistics.median(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--number", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    rows = []
    sentence = "please help me write a function that sorts a list of numbers "
    for n_overrides in (0, 20):
        policy = build_policy(n_overrides)
        compiled = CompiledPolicy.build(policy, {"a", "b", "c", "moe"})
        for chars in (100, 1_000, 10_000):
            text = (sentence * (chars // len(sentence) + 1))[:chars]
            scores = Scores("d1", 0.9, False, 0.2)
            ctx = RequestContext(text=text, user="u1", request_id="r1", budget_used_fraction=0.3)
            stats = {"a": ExpertStats(p95_ms=100.0)}
            for mode, pol in (("compiled", compiled), ("raw", policy)):
                us = median_us(
                    lambda p=pol, s=scores, c=ctx, st=stats: decide(p, s, c, st),
                    args.number,
                    args.repeat,
                )
                rows.append({"overrides": n_overrides + 1, "prompt_chars": chars, "mode": mode,
                             "median_us": round(us, 1)})  # fmt: skip
    print(f"{'overrides':>9} {'chars':>6} {'mode':>9} {'median us':>10}")
    for r in rows:
        print(f"{r['overrides']:>9} {r['prompt_chars']:>6} {r['mode']:>9} {r['median_us']:>10}")
    meta = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "number": args.number,
        "repeat": args.repeat,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
