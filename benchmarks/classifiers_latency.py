"""Encoder backends: single-query latency on unseen prompts, batched throughput, accuracy.

The gateway runs the classifier inside its ingress on every request, so the single-query
latency of a prompt it has never seen is the figure that matters (issue 11: p50 <= 1.5 ms,
p99 <= 5 ms, at most 0.3 points of CLINC150 val accuracy lost against fp32 MiniLM).

Latency: CLINC150 val texts, each sent once per round (the embedding cache is off: every
query runs the model); the configurations take turns round by round (interleaved), and the
table shows the median over rounds. `cpu_ms` is the thread's CPU time per query: wall minus
cpu is time the process waited for a core (other load), not work.

Accuracy (--accuracy): a logistic-regression head (C=10, fixed beforehand) fitted on the train
split's embeddings, scored on all of val (151 intents, argmax; nothing is tuned on val); and the
zero-training `examples` classifier over the 10 domains (10 train utterances each, seed 0),
domain accuracy on val's in-scope rows (argmax, no OOS rule).

    flock /tmp/slm-heavy.lock .venv/bin/python benchmarks/classifiers_latency.py
    nice -n 10 .venv/bin/python benchmarks/classifiers_latency.py --accuracy --rounds 0
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
from classifiers.text import read_jsonl

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clinc150"
CONFIGS = {
    "onnx-int8": ("onnx", True),
    "onnx-fp32": ("onnx", False),
    "torch-int8": ("torch", True),
    "torch-fp32": ("torch", False),
    "static": ("static", False),
}


def encoder(config: str, threads: int) -> SentenceEncoder:
    backend, quantize = CONFIGS[config]
    return SentenceEncoder(backend=backend, quantize=quantize, threads=threads, cache_size=0)


def single_round(enc: SentenceEncoder, texts: list[str]) -> dict[str, float]:
    wall, cpu = [], []
    for t in texts:
        w0, c0 = time.perf_counter(), time.thread_time()
        enc.encode([t])
        cpu.append((time.thread_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
    return {
        "p50_ms": float(np.percentile(wall, 50)),
        "p99_ms": float(np.percentile(wall, 99)),
        "cpu_p50_ms": float(np.percentile(cpu, 50)),
        "cpu_p99_ms": float(np.percentile(cpu, 99)),
    }


def latency(configs: list[str], texts: list[str], args: Any) -> dict[str, Any]:
    encs = {c: encoder(c, args.threads) for c in configs}
    for enc in encs.values():
        enc.encode(["warm up the allocator and lazy loads"])
    rounds: dict[str, list[dict[str, float]]] = {c: [] for c in configs}
    for r in range(args.rounds):
        chunk = texts[r * args.queries : (r + 1) * args.queries]  # unique across rounds too
        for c in configs:
            rounds[c].append(single_round(encs[c], chunk))
    out: dict[str, Any] = {}
    for c in configs:
        keys = rounds[c][0]
        out[c] = {k: float(np.median([x[k] for x in rounds[c]])) for k in keys}
        out[c]["rounds"] = rounds[c]
        start = time.perf_counter()
        batch = texts[: args.batch_queries]
        for s in range(0, len(batch), 32):
            encs[c].encode(batch[s : s + 32])
        out[c]["qps_batch32"] = len(batch) / (time.perf_counter() - start)
    return out


def accuracy(config: str, train: list[dict[str, Any]], val: list[dict[str, Any]]) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    enc = encoder(config, 1)
    t0 = time.perf_counter()
    x_train = enc.encode([r["text"] for r in train])
    x_val = enc.encode([r["text"] for r in val])
    encode_s = time.perf_counter() - t0
    head = LogisticRegression(C=10.0, max_iter=3000, random_state=0)
    head.fit(x_train, [r["intent"] for r in train])
    intent_acc = float((head.predict(x_val) == np.asarray([r["intent"] for r in val])).mean())
    by: dict[str, list[str]] = {}
    for r in train:
        if r["domain"] != "out_of_scope":
            by.setdefault(r["domain"], []).append(r["text"])
    rng = random.Random(0)
    examples = {d: rng.sample(sorted(t), 10) for d, t in sorted(by.items())}
    clf = ExamplesClassifier(examples, encoder=enc)
    ins = [r for r in val if r["domain"] != "out_of_scope"]
    pred = [c.label for c in clf.classify([r["text"] for r in ins])]
    domain_acc = float(np.mean([p == r["domain"] for p, r in zip(pred, ins, strict=True)]))
    return {
        "intent_acc_lr": intent_acc,
        "examples_domain_acc": domain_acc,
        "encode_texts_per_s": (len(train) + len(val)) / encode_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--queries", type=int, default=300, help="unique prompts per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-queries", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--out-json", default="bench-out/classifiers_latency.json")
    args = parser.parse_args()
    val = read_jsonl(Path(args.data_dir) / "val.jsonl")
    texts = sorted({r["text"] for r in val})
    random.Random(0).shuffle(texts)
    if args.rounds * args.queries > len(texts):
        raise SystemExit(f"only {len(texts)} unique prompts: lower --rounds or --queries")
    load_before = os.getloadavg()
    results: dict[str, Any] = {c: {} for c in args.configs}
    if args.rounds:
        for c, r in latency(args.configs, texts, args).items():
            results[c].update(r)
    if args.accuracy:
        train = read_jsonl(Path(args.data_dir) / "train.jsonl")
        for c in args.configs:
            results[c].update(accuracy(c, train, val))
            print(c, {k: round(v, 4) for k, v in results[c].items() if k != "rounds"}, flush=True)
    cols = ["p50_ms", "p99_ms", "cpu_p50_ms", "cpu_p99_ms", "qps_batch32"]
    cols += ["intent_acc_lr", "examples_domain_acc"]
    print(f"\n{'config':12s} " + " ".join(f"{c:>19s}" for c in cols))
    for name, r in results.items():
        print(f"{name:12s} " + " ".join(f"{r.get(c, float('nan')):19.3f}" for c in cols))
    meta = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "args": vars(args),
    }
    out = Path(args.out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {out}; load average before {load_before}, after {os.getloadavg()}")


if __name__ == "__main__":
    main()
