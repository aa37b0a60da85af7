"""Escalation recipes compared by K-fold cross-validation on the MMLU train half.

Choosing a recipe must not touch data the figures are reported on: every fold fits on 4/5 of
train (stratified by subject) and scores the remaining 1/5; the table shows the mean and spread
of APGR and cost saved at 95% of strong quality over the folds. The held-out test half is never
seen. Each recipe goes through the project's own training code (classifiers.train.fit_model),
so what is measured is what `classifier train --task escalation` builds.

    nice -n 10 .venv/bin/python benchmarks/classifiers_escalation_cv.py          # ~20 min idle
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.artifact import escalation_scores
from classifiers.metrics import routing_metrics
from classifiers.text import read_jsonl
from classifiers.train import fit_model, rows_to_dataset

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "routellm_mmlu"
# name: (kind, target, group field, group weight)
RECIPES: dict[str, tuple[str, str, str | None, float]] = {
    "tfidf/weak_fails": ("tfidf", "weak_fails", None, 0.0),
    "tfidf/strong_wins": ("tfidf", "strong_wins", None, 0.0),
    "tfidf/gain": ("tfidf", "gain", None, 0.0),
    "tfidf/gain+subject 0.5": ("tfidf", "gain", "subject", 0.5),
    "tfidf/strong_wins+subject 0.5": ("tfidf", "strong_wins", "subject", 0.5),
}


def folds(rows: list[dict[str, Any]], k: int, seed: int) -> list[np.ndarray]:
    from sklearn.model_selection import StratifiedKFold

    groups = [str(r.get("subject", "all")) for r in rows]
    skf = StratifiedKFold(k, shuffle=True, random_state=seed)
    return [test for _, test in skf.split(np.zeros(len(rows)), groups)]


def score_fold(
    rows: list[dict[str, Any]], test: np.ndarray, recipe: tuple[str, str, str | None, float]
) -> dict[str, float]:
    kind, target, group_field, weight = recipe
    held = set(test.tolist())
    train_rows = [r for i, r in enumerate(rows) if i not in held]
    test_rows = [rows[i] for i in test]
    ds = rows_to_dataset(
        train_rows,
        task="escalation",
        label_field=None,
        escalation_target=target,
        group_field=group_field,
    )
    params = {"C": 1.0, "target": target, "group_weight": weight}
    model = fit_model(ds, kind=kind, seed=0, params=params, progress=False)
    probs = model.predict_proba([r["text"] for r in test_rows])
    m = routing_metrics(
        escalation_scores(probs, model.classes),
        [bool(r["weak_correct"]) for r in test_rows],
        [bool(r["strong_correct"]) for r in test_rows],
    )
    return {"apgr": m.apgr, "cost_saved_at_95": m.cost_saved_at_95}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(DATA / "train.jsonl"))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-json", default="bench-out/classifiers_escalation_cv.json")
    args = parser.parse_args()
    rows = read_jsonl(Path(args.data))
    splits = folds(rows, args.folds, args.seed)
    results: dict[str, Any] = {}
    for name in args.recipes:
        t0 = time.perf_counter()
        per = [score_fold(rows, test, RECIPES[name]) for test in splits]
        results[name] = {
            key: {
                "mean": float(np.mean([p[key] for p in per])),
                "sd": float(np.std([p[key] for p in per])),
            }
            for key in ("apgr", "cost_saved_at_95")
        }
        results[name]["folds"] = per
        print(f"{name}: {results[name]['apgr']} ({time.perf_counter() - t0:.0f}s)", flush=True)
    print(f"\n{len(rows)} rows, {args.folds}-fold CV (stratified by subject, seed {args.seed})")
    print(f"{'recipe':32s} {'APGR':>14s} {'cost saved @95%':>18s}")
    for name, r in results.items():
        a, c = r["apgr"], r["cost_saved_at_95"]
        print(
            f"{name:32s} {a['mean']:7.3f} +-{a['sd']:.3f} "
            f"{100 * c['mean']:10.1f}% +-{100 * c['sd']:.1f}"
        )
    out = Path(args.out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "loadavg": os.getloadavg(), "args": vars(args)}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
