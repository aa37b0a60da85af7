"""Escalation benchmark (RouteLLM-style) on MMLU / GSM8K rows with weak/strong correctness.

Held-out protocol: a seeded 25% test slice (stratified by MMLU subject) is never used for
fitting or choosing; numbers on it estimate the hidden half of the data. Random router = a
constant score (APGR 0.5 exactly).

    nice -n 10 .venv/bin/python benchmarks/classifiers_escalation.py
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.artifact import escalation_scores, outcome
from classifiers.encoder import shared_encoder
from classifiers.metrics import routing_metrics
from classifiers.text import read_jsonl, sha256_json
from classifiers.train import kind_module, seed_everything

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def split(rows: list[dict[str, Any]], frac: float, seed: int) -> tuple[list[int], list[int]]:
    rng = np.random.default_rng(seed)
    by: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by.setdefault(str(r.get("subject", "all")), []).append(i)
    train, test = [], []
    for key in sorted(by):
        idx = rng.permutation(by[key]).tolist()
        cut = round(len(idx) * frac)
        test += idx[:cut]
        train += idx[cut:]
    return sorted(train), sorted(test)


def targets(rows: list[dict[str, Any]], how: str) -> list[str]:
    if how == "gain":  # four outcomes; the score is P(strong only) - P(weak only)
        return [outcome(bool(r["weak_correct"]), bool(r["strong_correct"])) for r in rows]
    if how == "weak_fails":
        return ["weak_fails" if not r["weak_correct"] else "weak_ok" for r in rows]
    # "strong_wins": only prompts where escalating changes the outcome for the better.
    return [
        "weak_fails" if (r["strong_correct"] and not r["weak_correct"]) else "weak_ok" for r in rows
    ]


def prime(texts: list[str], cache: Path, max_length: int) -> None:
    enc = shared_encoder(max_length=max_length)
    path = cache / f"emb_{sha256_json([enc.name, max_length, texts])[:12]}.npy"
    vecs = np.load(path) if path.exists() else enc.encode(texts, progress=True)
    np.save(path, vecs)
    enc.prime(texts, vecs)


def knn_scores(train_x: np.ndarray, y: np.ndarray, test_x: np.ndarray, k: int) -> np.ndarray:
    """Mean failure of the k most similar training prompts (subject-level difficulty)."""
    sims = test_x @ train_x.T
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    return y[top].mean(1)


def fit_score(
    kind: str, tr: list[dict[str, Any]], te: list[dict[str, Any]], how: str, args: Any
) -> np.ndarray:
    seed_everything(args.seed)
    params: dict[str, Any] = {"max_length": args.max_length, "C": args.C}
    model = kind_module(kind).fit(
        [r["text"] for r in tr], targets(tr, how), seed=args.seed, params=params, progress=False
    )
    return escalation_scores(model.predict_proba([r["text"] for r in te]), model.classes)


def evaluate_dataset(name: str, rows: list[dict[str, Any]], args: Any) -> dict[str, Any]:
    tr_i, te_i = split(rows, args.test_frac, args.seed)
    tr, te = [rows[i] for i in tr_i], [rows[i] for i in te_i]
    weak = [r["weak_correct"] for r in te]
    strong = [r["strong_correct"] for r in te]
    out: dict[str, Any] = {"n_train": len(tr), "n_test": len(te)}
    out["random"] = routing_metrics(np.zeros(len(te)), weak, strong).to_dict()
    oracle = [0.0 if r["weak_correct"] else (1.0 if r["strong_correct"] else 0.5) for r in te]
    out["oracle"] = routing_metrics(oracle, weak, strong).to_dict()
    scores: dict[str, np.ndarray] = {}
    for how in args.targets:
        for kind in args.kinds:
            t0 = time.perf_counter()
            scores[f"{kind}/{how}"] = fit_score(kind, tr, te, how, args)
            print(f"{name} {kind}/{how} {time.perf_counter() - t0:.0f}s", flush=True)
    if "embedding" in args.kinds:
        enc = shared_encoder(max_length=args.max_length)
        xtr, xte = enc.encode([r["text"] for r in tr]), enc.encode([r["text"] for r in te])
        y = np.array([0.0 if r["weak_correct"] else 1.0 for r in tr])
        scores["knn50/weak_fails"] = knn_scores(xtr, y, xte, 50)
    if len(args.kinds) > 1:
        ranks = {k: np.argsort(np.argsort(v)) / len(v) for k, v in scores.items()}
        scores["rank-avg(all)"] = np.mean(list(ranks.values()), axis=0)
    for key, s in scores.items():
        out[key] = routing_metrics(s, weak, strong).to_dict()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--kinds", nargs="+", default=["tfidf", "embedding"])
    parser.add_argument("--datasets", nargs="+", default=["routellm_mmlu", "routellm_gsm8k"])
    parser.add_argument("--targets", nargs="+", default=["weak_fails", "strong_wins", "gain"])
    parser.add_argument("--test-frac", type=float, default=0.25)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--C", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default="bench-out/esc-cache")
    parser.add_argument("--out-json", default="bench-out/classifiers_escalation.json")
    args = parser.parse_args()
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for ds in args.datasets:
        path = Path(args.data_dir) / ds / "train.jsonl"
        if not path.exists():
            print(f"skip {ds}: {path} not found")
            continue
        rows = read_jsonl(path)
        if "embedding" in args.kinds:
            prime([r["text"] for r in rows], cache, args.max_length)
        results[ds] = evaluate_dataset(ds, rows, args)
    cols = ("apgr", "cpt50", "cpt80", "cost_saved_at_95")
    for ds, res in results.items():
        print(f"\n{ds}: train {res['n_train']} / held-out test {res['n_test']}")
        print(f"{'router':28s} " + " ".join(f"{c:>16s}" for c in cols))
        for key, m in res.items():
            if isinstance(m, dict):
                print(f"{key:28s} " + " ".join(f"{m[c]:16.3f}" for c in cols))
    out = Path(args.out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "args": vars(args)}
    out.write_text(json.dumps({"meta": meta, **results}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
