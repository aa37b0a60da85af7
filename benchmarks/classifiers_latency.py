"""Single-query latency and batched throughput of the in-process `examples` classifier.

The gateway's default policy runs this classifier inside the ingress on every request, so
its single-query latency is the number that matters (targets: p50 <= 5 ms, p99 <= 20 ms).
Routes: the 10 CLINC150 domains with --per-label example utterances each; queries: CLINC150
val (distinct texts, the embedding cache cleared so every query runs the encoder).

    nice -n 10 .venv/bin/python benchmarks/classifiers_latency.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.encoder import SentenceEncoder
from classifiers.examples import ExamplesClassifier
from classifiers.metrics import label_metrics
from classifiers.text import read_jsonl

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clinc150"


def routes(train: list[dict[str, Any]], per_label: int, seed: int) -> dict[str, list[str]]:
    by: dict[str, list[str]] = {}
    for r in train:
        if r["domain"] != "out_of_scope":
            by.setdefault(r["domain"], []).append(r["text"])
    rng = random.Random(seed)
    return {d: rng.sample(sorted(texts), per_label) for d, texts in sorted(by.items())}


def single(clf: ExamplesClassifier, enc: SentenceEncoder, texts: list[str]) -> dict[str, float]:
    enc.clear_cache()
    clf.classify(["warm up"])
    times = []
    for t in texts:
        start = time.perf_counter()
        clf.classify([t])
        times.append((time.perf_counter() - start) * 1000)
    hit = []
    for t in texts[:100]:  # now cached: the LRU path
        start = time.perf_counter()
        clf.classify([t])
        hit.append((time.perf_counter() - start) * 1000)
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "cached_p50_ms": float(np.percentile(hit, 50)),
    }


def batched(clf: ExamplesClassifier, enc: SentenceEncoder, texts: list[str], bs: int) -> float:
    enc.clear_cache()
    start = time.perf_counter()
    for s in range(0, len(texts), bs):
        clf.classify(texts[s : s + bs])
    return len(texts) / (time.perf_counter() - start)


def run_config(
    quantize: bool, threads: int, ex: dict[str, list[str]], val: list[dict[str, Any]], args: Any
) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    enc = SentenceEncoder(quantize=quantize, max_length=args.max_length)
    clf = ExamplesClassifier(ex, encoder=enc)
    texts = [r["text"] for r in val]
    runs = [single(clf, enc, texts[: args.queries]) for _ in range(args.repeats)]
    result: dict[str, Any] = {key: float(np.median([r[key] for r in runs])) for key in runs[0]}
    for bs in args.batch_sizes:
        result[f"qps_batch{bs}"] = batched(clf, enc, texts[: args.batch_queries], bs)
    # Routing quality of the same configuration (threshold and quantisation both matter).
    enc.clear_cache()
    sample = val[: args.quality_n]
    out = clf.classify([r["text"] for r in sample])
    pred = ["out_of_scope" if c.out_of_scope else c.label for c in out]
    m = label_metrics([r["domain"] for r in sample], pred, "out_of_scope")
    result.update({"domain_in_acc": m.in_scope_accuracy, "domain_oos_recall": m.oos_recall})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--per-label", type=int, default=10)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--batch-queries", type=int, default=512)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quality-n", type=int, default=1000, help="val rows for accuracy")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-json", default="bench-out/classifiers_latency.json")
    args = parser.parse_args()
    train = read_jsonl(Path(args.data_dir) / "train.jsonl")
    val = read_jsonl(Path(args.data_dir) / "val.jsonl")
    random.Random(args.seed).shuffle(val)
    ex = routes(train, args.per_label, args.seed)
    results = {}
    for quantize in (True, False):
        for threads in args.threads:
            name = f"{'int8' if quantize else 'fp32'} threads={threads}"
            results[name] = run_config(quantize, threads, ex, val, args)
            print(name, {k: round(v, 3) for k, v in results[name].items()}, flush=True)
    cols = ["p50_ms", "p99_ms", "cached_p50_ms", *[f"qps_batch{b}" for b in args.batch_sizes]]
    cols += ["domain_in_acc", "domain_oos_recall"]
    print(f"\n{'config':18s} " + " ".join(f"{c:>17s}" for c in cols))
    for name, r in results.items():
        print(f"{name:18s} " + " ".join(f"{r[c]:17.3f}" for c in cols))
    meta = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
        "args": vars(args),
    }
    out = Path(args.out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {out}; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
