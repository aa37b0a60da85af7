"""Evaluating a classifier on labelled JSONL: quality, latency, throughput."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from classifiers.base import Classifier
from classifiers.metrics import label_metrics, routing_metrics

DEFAULT_OOS_OUTPUT = "out_of_scope"


def output_label(clf: Classifier, oos_label: str | None = None) -> str:
    meta = getattr(clf, "meta", None)
    return oos_label or getattr(meta, "oos_label", None) or DEFAULT_OOS_OUTPUT


def timed_batches(
    clf: Classifier, texts: Sequence[str], batch_size: int
) -> tuple[list[Any], float]:
    results: list[Any] = []
    start = time.perf_counter()
    for s in range(0, len(texts), batch_size):
        results.extend(clf.classify(list(texts[s : s + batch_size])))
    return results, time.perf_counter() - start


def single_query_latency(clf: Classifier, texts: Sequence[str], n: int = 200) -> dict[str, float]:
    from classifiers.encoder import clear_shared_caches

    # Timings must measure the model: an LRU hit would report microseconds.
    clear_shared_caches()
    sample = list(texts[:n]) or ["hello"]
    clf.classify(sample[:1])  # warm-up: lazy loads, allocator
    times = []
    for t in sample:
        start = time.perf_counter()
        clf.classify([t])
        times.append((time.perf_counter() - start) * 1000)
    return {
        "latency_ms_p50": float(np.percentile(times, 50)),
        "latency_ms_p99": float(np.percentile(times, 99)),
        "latency_n": len(times),
    }


def evaluate(
    clf: Classifier,
    rows: Sequence[Mapping[str, Any]],
    *,
    label_field: str | None = None,
    oos_label: str | None = None,
    text_field: str = "text",
    batch_size: int = 64,
    latency_queries: int = 200,
) -> dict[str, Any]:
    """Quality metrics for the rows' labels (or escalation metrics), plus speed."""
    texts = [str(r.get(text_field, "")) for r in rows]
    from classifiers.encoder import clear_shared_caches

    clear_shared_caches()
    results, seconds = timed_batches(clf, texts, batch_size)
    report: dict[str, Any] = {
        "n": len(texts),
        "batch_size": batch_size,
        "throughput_qps": len(texts) / seconds if seconds > 0 else float("inf"),
    }
    meta = getattr(clf, "meta", None)
    if getattr(meta, "task", "labels") == "escalation":
        weak = [bool(r["weak_correct"]) for r in rows]
        strong = [bool(r["strong_correct"]) for r in rows]
        report.update(routing_metrics([r.escalate or 0.0 for r in results], weak, strong).to_dict())
    elif label_field:
        oos_out = output_label(clf, oos_label)
        gold = [oos_out if str(r[label_field]) == oos_label else str(r[label_field]) for r in rows]
        pred = [oos_out if r.out_of_scope else r.label for r in results]
        has_oos = oos_label is not None or oos_out in gold
        report.update(label_metrics(gold, pred, oos_out if has_oos else None).to_dict())
    if latency_queries > 0:
        report.update(single_query_latency(clf, texts, latency_queries))
    return report
