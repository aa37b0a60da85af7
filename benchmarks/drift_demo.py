"""Drift detection shown working: in-distribution traffic stays quiet, shifted mixes alert.

Replays CLINC150 traffic through the pure pieces the gateway uses
(router.continuous.drift.DriftMonitor fed with the live classifier's outputs), one fresh window
per scenario:

  in-distribution  windows sampled from CLINC150 val (the reference's own population)
  domain skew      a share of the window from two domains only (banking, credit_cards)
  oos surge        a share of the window from CLINC150's out-of-scope prompts
  new topic        a share of the window from GSM8K maths word problems (a topic CLINC lacks)

Classifier: the artifact `slm-router classifier train` wrote to artifacts/clinc150-domain
(its reference was stored at training time on CLINC150 val); without one, the zero-training
`examples` classifier on 20 train utterances per domain, whose reference is computed here on
half of val (classifiers.drift_reference) and replayed from the other half.

    nice -n 10 .venv/bin/python benchmarks/drift_demo.py [--window 1000] [--runs 5]

Prints a table and writes bench-out/drift_demo.json. Skips (exit 0, with the reason) when
../shared/data/clinc150 is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
ARTIFACT = ROOT / "artifacts" / "clinc150-domain"
OUT = ROOT / "bench-out" / "drift_demo.json"
SKEW = ("banking", "credit_cards")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_classifier(kind: str, train: list[dict[str, Any]], val: list[dict[str, Any]]) -> Any:
    """(classifier, reference, replay pool of val rows, description)."""
    from classifiers.drift_reference import compute_reference

    if kind == "artifact":
        from classifiers.artifact import load_artifact

        clf = load_artifact(ARTIFACT)
        assert clf.meta.reference is not None, "artifact without a reference"
        return clf, clf.meta.reference, val, f"artifact {ARTIFACT.name} {clf.meta.version}"
    from classifiers import ClassifierSpec, build_classifier

    rng = random.Random(0)
    by: dict[str, list[str]] = {}
    for r in train:
        if r["domain"] != "out_of_scope":
            by.setdefault(r["domain"], []).append(r["text"])
    examples = {d: rng.sample(sorted(t), 20) for d, t in sorted(by.items())}
    zero = build_classifier(ClassifierSpec(kind="examples"), examples, ROOT)
    shuffled = val[:]
    rng.shuffle(shuffled)
    half = len(shuffled) // 2
    ref = compute_reference(zero, [r["text"] for r in shuffled[:half]])
    return zero, ref, shuffled[half:], f"examples (20/domain) {zero.info().version}"


def classify_all(clf: Any, texts: Sequence[str]) -> list[Any]:
    out: list[Any] = []
    for s in range(0, len(texts), 256):
        out.extend(clf.classify(list(texts[s : s + 256])))
    return out


def window(
    rng: random.Random, base: list[Any], shifted: list[Any], share: float, n: int
) -> list[Any]:
    k = round(n * share)
    items = rng.sample(base, min(n - k, len(base))) + rng.choices(shifted, k=k)
    rng.shuffle(items)
    return items


def measure(ref: Any, items: list[Any], window_size: int) -> dict[str, Any]:
    from router.continuous.drift import DriftMonitor
    from router.continuous.reference import DriftReference
    from router.continuous.spec import DriftPolicy

    policy = DriftPolicy(window=window_size, min_samples=min(200, window_size), psi_alert=0.2)
    mon = DriftMonitor(policy, DriftReference.from_reference(ref, source="demo"))
    mon.observe_many(items)
    snap = mon.snapshot()
    return {
        "state": snap.state,
        **{k: m.psi for k, m in snap.metrics.items()},
        "oos_rate": snap.metrics["out_of_scope"].live["rate"],  # type: ignore[index]
    }


def scenarios(
    pools: dict[str, list[Any]], ref: Any, window_size: int, runs: int
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    plan: list[tuple[str, str | None, float]] = [("in-distribution", None, 0.0)]
    plan += [("domain skew", "skew", s) for s in (0.1, 0.25, 0.5)]
    plan += [("oos surge", "oos", s) for s in (0.1, 0.25, 0.5)]
    plan += [("new topic (GSM8K)", "gsm8k", s) for s in (0.05, 0.1, 0.25, 0.5)]
    for name, pool, share in plan:
        if pool is not None and not pools.get(pool):
            continue
        results = [
            measure(
                ref,
                window(
                    random.Random(seed),
                    pools["in"],
                    pools.get(pool or "in", []),
                    share,
                    window_size,
                ),
                window_size,
            )
            for seed in range(runs)
        ]
        row: dict[str, Any] = {"scenario": name, "shifted_share": share, "runs": runs}
        for key in ("domain_mix", "confidence", "out_of_scope", "oos_rate"):
            row[key] = statistics.median(r[key] for r in results)
        row["alerts"] = sum(r["state"] == "alert" for r in results)
        rows.append(row)
    return rows


def cost(ref: Any, items: list[Any], window_size: int) -> dict[str, float]:
    """Per-request cost of observe() and of one snapshot (a scrape), medians of 5 runs."""
    from router.continuous.drift import DriftMonitor
    from router.continuous.reference import DriftReference
    from router.continuous.spec import DriftPolicy

    obs, snaps = [], []
    for _ in range(5):
        mon = DriftMonitor(DriftPolicy(window=window_size), DriftReference.from_reference(ref))
        t0 = time.perf_counter()
        mon.observe_many(items)
        obs.append((time.perf_counter() - t0) / len(items) * 1e6)
        t0 = time.perf_counter()
        mon.snapshot()
        snaps.append((time.perf_counter() - t0) * 1e6)
    return {"observe_us": statistics.median(obs), "snapshot_us": statistics.median(snaps)}


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'scenario':<20} {'share':>6} {'PSI mix':>8} {'PSI conf':>9} {'PSI oos':>8} "
        f"{'oos rate':>9} {'alerts':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['scenario']:<20} {r['shifted_share']:>6.2f} {r['domain_mix']:>8.3f} "
            f"{r['confidence']:>9.3f} {r['out_of_scope']:>8.3f} {r['oos_rate']:>9.3f} "
            f"{r['alerts']:>4}/{r['runs']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--classifier", choices=("auto", "artifact", "examples"), default="auto")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not (DATA / "clinc150" / "val.jsonl").exists():
        print(f"skipped: {DATA / 'clinc150'} not found (see ../shared/data/README.md)")
        return 0
    train = read_jsonl(DATA / "clinc150" / "train.jsonl")
    val = read_jsonl(DATA / "clinc150" / "val.jsonl")
    kind = args.classifier
    if kind == "auto":
        kind = "artifact" if (ARTIFACT / "metadata.json").exists() else "examples"
    t0 = time.perf_counter()
    clf, ref, replay, described = load_classifier(kind, train, val)
    in_rows = [r for r in replay if r["domain"] != "out_of_scope"]
    # OOS rows from train too: val alone has 100, fewer than a surge window needs.
    oos_rows = [r for r in train + replay if r["domain"] == "out_of_scope"]
    gsm_path = DATA / "gsm8k" / "train.jsonl"
    gsm = [r["question"] for r in read_jsonl(gsm_path)[:1000]] if gsm_path.exists() else []
    # In-distribution = the reference's population: val as it is, OOS share included.
    pools = {
        "in": classify_all(clf, [r["text"] for r in replay]),
        "skew": classify_all(clf, [r["text"] for r in in_rows if r["domain"] in SKEW]),
        "oos": classify_all(clf, [r["text"] for r in oos_rows]),
        "gsm8k": classify_all(clf, gsm),
    }
    classify_s = time.perf_counter() - t0
    rows = scenarios(pools, ref, args.window, args.runs)
    costs = cost(ref, pools["in"][: args.window] * 5, args.window)
    print(
        f"classifier: {described}; window {args.window}; alert at PSI >= 0.2; "
        f"medians of {args.runs} windows"
    )
    print(table(rows))
    print(
        f"observe(): {costs['observe_us']:.2f} us/request; snapshot(): "
        f"{costs['snapshot_us']:.1f} us"
    )
    result = {
        "classifier": described,
        "window": args.window,
        "psi_alert": 0.2,
        "rows": rows,
        "cost": costs,
        "setup_s": classify_s,
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({"out": str(args.out), "rows": len(rows)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
