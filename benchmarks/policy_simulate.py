"""`slm-router policy simulate` on the shipped policies: routing accuracy, cost per 1k requests
against the all-to-fallback baseline, and replay throughput (median over --runs).

    nice -n 10 .venv/bin/python benchmarks/policy_simulate.py [--runs 3] [--out bench-out]

Cases: policies/default.yaml on benchmarks/data/policy_default_traffic.jsonl (40 labelled
prompts, 8 per domain); remote-providers.yaml on the same prompts (cost only: its routes are
different domains); clinc150.yaml on CLINC150 val (3,100 rows) when ../shared data and
artifacts/clinc150-domain exist. Prints a table and writes OUT/policy_simulate.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLINC_VAL = ROOT.parent / "shared" / "data" / "clinc150" / "val.jsonl"
DEFAULT_TRAFFIC = ROOT / "benchmarks" / "data" / "policy_default_traffic.jsonl"


def cases() -> list[tuple[str, list[str]]]:
    out = [
        (
            "default",
            ["policies/default.yaml", "--traffic", str(DEFAULT_TRAFFIC), "--label-field", "domain"],
        ),
        (
            "remote-providers",
            ["policies/examples/remote-providers.yaml", "--traffic", str(DEFAULT_TRAFFIC)],
        ),
    ]
    if CLINC_VAL.exists() and (ROOT / "artifacts" / "clinc150-domain").is_dir():
        out.append(
            (
                "clinc150",
                [
                    "policies/examples/clinc150.yaml",
                    "--traffic",
                    str(CLINC_VAL),
                    "--label-field",
                    "domain",
                ],
            )
        )
    else:
        print(
            "skipping clinc150: shared data or artifacts/clinc150-domain missing", file=sys.stderr
        )
    return out


def run_once(args: list[str]) -> tuple[dict[str, Any], float]:
    cmd = [
        str(ROOT / ".venv" / "bin" / "slm-router"),
        "policy",
        "simulate",
        *args,
        "--json",
        "--no-progress",
    ]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout), time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out")
    args = ap.parse_args()
    results: dict[str, Any] = {}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, case in cases():
        reports, walls = [], []
        for _ in range(args.runs):
            report, wall = run_once(case)
            reports.append(report)
            walls.append(wall)
        last = reports[-1]
        results[name] = {
            "command": "slm-router policy simulate " + " ".join(case) + " --json",
            "requests": last["requests"],
            "routing_accuracy": last["routing_accuracy"],
            "by_expert": last["by_expert"],
            "by_domain": last["by_domain"],
            "cost_per_1k": last["cost_per_1k"],
            "baseline_cost_per_1k": last["baseline_cost_per_1k"],
            "savings": last["savings"],
            "tokens": last["tokens"],
            "prompts_per_second_median": statistics.median(
                r["prompts_per_second"] for r in reports
            ),
            "wall_s_median": round(statistics.median(walls), 2),
            "runs": args.runs,
        }
    print(
        f"{'policy':<28} {'requests':>8} {'accuracy':>9} {'$/1k':>9} {'base $/1k':>10} "
        f"{'savings':>8} {'prompts/s':>10} {'wall s':>7}"
    )
    for name, r in results.items():
        acc = "-" if r["routing_accuracy"] is None else f"{r['routing_accuracy']:.3f}"
        print(
            f"{name:<28} {r['requests']:>8} {acc:>9} {r['cost_per_1k']:>9.4f} "
            f"{r['baseline_cost_per_1k']:>10.4f} {100 * r['savings']:>7.1f}% "
            f"{r['prompts_per_second_median']:>10.1f} {r['wall_s_median']:>7.1f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "policy_simulate.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
