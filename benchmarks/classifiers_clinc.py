"""CLINC150 benchmark: 151-way intents (OOS `oos`) and 11-way domains, vs Larson et al. 2019.

Protocol (honest estimate of held-out test): fit on train.jsonl; split val.jsonl in two
stratified halves; the OOS threshold is calibrated on the first half only and every number is
reported on the second half. Each kind's probabilities are cached under --cache-dir so later
runs (e.g. the slow `finetuned` one) and ensembles compose without refitting.

    nice -n 10 .venv/bin/python benchmarks/classifiers_clinc.py --kinds tfidf,embedding
    nice -n 10 .venv/bin/python benchmarks/classifiers_clinc.py --kinds finetuned
    .venv/bin/python benchmarks/classifiers_clinc.py --kinds none   # tables + ensembles only
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.encoder import shared_encoder
from classifiers.metrics import label_metrics
from classifiers.scoring import in_scope_view, oos_mask
from classifiers.text import read_jsonl, sha256_json
from classifiers.train import calibrate_threshold, kind_module, seed_everything

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clinc150"
LARSON = {  # Table 2, "Full", test split: in-scope accuracy / OOS recall
    "BERT (oos-train)": (96.9, 40.3),
    "BERT (oos-threshold)": (96.2, 52.3),
    "MLP on USE": (93.5, 47.4),
    "SVM": (91.0, 14.5),
}


def split_val(rows: list[dict[str, Any]], seed: int) -> tuple[list[int], list[int]]:
    rng = np.random.default_rng(seed)
    by: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by.setdefault(r["intent"], []).append(i)
    calib, report = [], []
    for key in sorted(by):
        idx = rng.permutation(by[key]).tolist()
        calib += idx[: len(idx) // 2]
        report += idx[len(idx) // 2 :]
    return sorted(calib), sorted(report)


def prime_embeddings(texts: list[str], cache: Path) -> None:
    enc = shared_encoder()
    path = cache / f"emb_{sha256_json([enc.name, enc.max_length, texts])[:12]}.npy"
    if path.exists():
        vecs = np.load(path)
    else:
        t0 = time.perf_counter()
        vecs = enc.encode(texts, progress=True)
        np.save(path, vecs)
        print(f"encoded {len(texts)} texts in {time.perf_counter() - t0:.0f}s")
    enc.prime(texts, vecs)


def fit_probs(
    kind: str, target: str, train: list[dict[str, Any]], val: list[dict[str, Any]], args: Any
) -> dict[str, Any]:
    params: dict[str, Any] = json.loads(args.params).get(kind, {})
    seed_everything(args.seed)
    t0 = time.perf_counter()
    model = kind_module(kind).fit(
        [r["text"] for r in train],
        [r[target] for r in train],
        seed=args.seed,
        params=params,
        progress=True,
    )
    fit_s = time.perf_counter() - t0
    if args.save_models:
        model.save(Path(args.cache_dir) / f"model_{target}_{kind}_seed{args.seed}")
    t0 = time.perf_counter()
    probs = model.predict_proba([r["text"] for r in val])
    return {
        "classes": list(model.classes),
        "probs": probs.tolist(),
        "fit_s": fit_s,
        "predict_qps": len(val) / (time.perf_counter() - t0),
        "params": params,
    }


def evaluate_point(
    probs: np.ndarray,
    classes: list[str],
    gold: list[str],
    oos: str,
    calib: list[int],
    report: list[int],
    weight: float,
) -> dict[str, Any]:
    threshold = calibrate_threshold(
        probs[calib], classes, [gold[i] for i in calib], oos, {"oos_weight": weight}
    )

    def predict(rows: list[int]) -> list[str]:
        in_p, labels, mass = in_scope_view(probs[rows], classes, oos)
        flagged = oos_mask(in_p, mass, threshold)
        return np.where(flagged, oos, np.asarray(labels, dtype=object)[in_p.argmax(1)]).tolist()

    pred = predict(report)
    m = label_metrics([gold[i] for i in report], pred, oos, top=5)
    # Kinds are compared on the calibration half; the report half is only ever reported.
    c = label_metrics([gold[i] for i in calib], predict(calib), oos)
    selection = {"calib_in_scope_accuracy": c.in_scope_accuracy, "calib_oos_recall": c.oos_recall}
    return {"threshold": threshold, "pred": pred, **selection, **m.to_dict()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    train = read_jsonl(Path(args.data_dir) / "train.jsonl")
    val = read_jsonl(Path(args.data_dir) / "val.jsonl")
    calib, report = split_val(val, args.seed)
    kinds = [k for k in args.kinds.split(",") if k and k != "none"]
    if any(k in ("embedding", "ensemble") for k in kinds):
        prime_embeddings(sorted({r["text"] for r in train + val}), cache)
    for target in args.targets.split(","):
        for kind in kinds:
            path = cache / f"probs_{target}_{kind}_seed{args.seed}.json"
            if kind == "finetuned" and target == "domain" and not args.finetune_domains:
                continue
            print(f"fitting {kind} on {target}s ...", flush=True)
            path.write_text(json.dumps(fit_probs(kind, target, train, val, args)))
    return summarize(val, calib, report, cache, args)


def summarize(
    val: list[dict[str, Any]], calib: list[int], report: list[int], cache: Path, args: Any
) -> dict[str, Any]:
    domain_of = {r["intent"]: r["domain"] for r in val}
    results: dict[str, Any] = {"intent": {}, "domain": {}, "routing": {}}
    for target, oos in (("intent", "oos"), ("domain", "out_of_scope")):
        gold = [r[target] for r in val]
        runs = {
            p.name.split("_")[2]: json.loads(p.read_text())
            for p in sorted(cache.glob(f"probs_{target}_*_seed{args.seed}.json"))
        }
        for size in range(1, len(runs) + 1):
            for combo in itertools.combinations(sorted(runs), size):
                classes = runs[combo[0]]["classes"]
                if any(runs[k]["classes"] != classes for k in combo):
                    continue
                probs = np.mean([np.asarray(runs[k]["probs"]) for k in combo], axis=0)
                for weight in args.oos_weights:
                    point = evaluate_point(probs, classes, gold, oos, calib, report, weight)
                    name = "+".join(combo) + f" w={weight:g}"
                    pred = point.pop("pred")
                    results[target][name] = point
                    if target == "intent":
                        summed = summed_domains(probs, classes, domain_of)
                        point = evaluate_point(
                            summed[0], summed[1], [r["domain"] for r in val], "out_of_scope",
                            calib, report, weight,
                        )  # fmt: skip
                        point.pop("pred")
                        results["domain"][f"summed-intent {name}"] = point
                        results["routing"][f"summed-intent {name}"] = {
                            "val_mix": None,
                            "test_mix": (4500 * point["in_scope_accuracy"]
                                         + 1000 * point["oos_recall"]) / 5500,
                        }  # fmt: skip
                        dom_pred = [domain_of.get(p, "out_of_scope") for p in pred]
                        dom_gold = [val[i]["domain"] for i in report]
                        dm = label_metrics(dom_gold, dom_pred, "out_of_scope", top=3).to_dict()
                        results["domain"][f"via-intent {name}"] = dm
                        results["routing"][f"via-intent {name}"] = routing_accuracy(
                            dom_gold, dom_pred
                        )
    return results


def summed_domains(
    probs: np.ndarray, classes: list[str], domain_of: dict[str, str]
) -> tuple[np.ndarray, list[str]]:
    """What `classifier train --fine-label-field intent` serves: P(domain) = sum of its
    intents' P; the OOS threshold is then calibrated on domain probabilities."""
    domains = sorted({domain_of[c] for c in classes})
    onehot = np.zeros((len(classes), len(domains)))
    for i, c in enumerate(classes):
        onehot[i, domains.index(domain_of[c])] = 1.0
    return probs @ onehot, domains


def routing_accuracy(gold: list[str], pred: list[str]) -> dict[str, float]:
    """What `policy simulate` reports, on the report half's own mix (30:1 in-scope:OOS) and
    re-weighted to the test split's (4,500 in-scope : 1,000 OOS)."""
    g, p = np.asarray(gold, dtype=object), np.asarray(pred, dtype=object)
    oos = g == "out_of_scope"
    acc, rec = float((g == p)[~oos].mean()), float((p == "out_of_scope")[oos].mean())
    return {"val_mix": float((g == p).mean()), "test_mix": (4500 * acc + 1000 * rec) / 5500}


def print_table(results: dict[str, Any]) -> None:
    for target in ("intent", "domain"):
        print(f"\n{target}s (report half of val)")
        head = f"{'model':42s} {'in-acc':>7s} {'oos-rec':>7s} {'oos-prec':>8s} {'mF1':>6s}"
        print(head + f" {'calib in-acc':>12s} {'calib oos':>9s}")
        for name, m in results[target].items():
            rec = m["oos_recall"] or 0.0
            prec = m["oos_precision"] or 0.0
            c_acc, c_rec = m.get("calib_in_scope_accuracy"), m.get("calib_oos_recall")
            calib = "" if c_acc is None else f" {100 * c_acc:12.2f} {100 * (c_rec or 0):9.2f}"
            print(
                f"{name:42s} {100 * m['in_scope_accuracy']:7.2f} {100 * rec:7.2f} "
                f"{100 * prec:8.2f} {100 * m['macro_f1']:6.2f}" + calib
            )
    print("\nrouting accuracy, domains via intents (report half; re-weighted to test's OOS mix)")
    for name, r in results["routing"].items():
        val_mix = "-" if r["val_mix"] is None else f"{r['val_mix']:.4f}"
        print(f"{name:42s} {val_mix:>6s} {r['test_mix']:.4f}")
    print(
        "\nLarson et al. 2019 (test): " + "; ".join(f"{k} {a}/{r}" for k, (a, r) in LARSON.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--kinds", default="tfidf,embedding")
    parser.add_argument("--params", default="{}", help="JSON {kind: params}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--oos-weights", type=float, nargs="+", default=[0.0, 0.1, 0.25])
    parser.add_argument("--finetune-domains", action="store_true")
    parser.add_argument("--targets", default="intent,domain", help="labels to fit on")
    parser.add_argument("--save-models", action="store_true", help="keep each fitted model")
    parser.add_argument("--cache-dir", default="bench-out/clinc-cache")
    parser.add_argument("--out-json", default="bench-out/classifiers_clinc.json")
    args = parser.parse_args()
    if not (Path(args.data_dir) / "train.jsonl").exists():
        raise SystemExit(f"CLINC150 not found under {args.data_dir}")
    results = run(args)
    print_table(results)
    out = Path(args.out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "python": platform.python_version(), "args": vars(args)}
    out.write_text(json.dumps({"meta": meta, **results}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
