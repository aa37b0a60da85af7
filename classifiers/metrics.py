"""Evaluation metrics: intent/OOS (Larson et al. 2019) and routing (RouteLLM, Ong et al. 2024)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LabelMetrics:
    n: int
    in_scope_accuracy: float | None  # an in-scope row predicted OOS counts as wrong
    oos_recall: float | None
    oos_precision: float | None
    macro_f1: float
    top_confusions: list[tuple[str, str, int]]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def label_metrics(
    gold: Sequence[str], pred: Sequence[str], oos_label: str | None, top: int = 10
) -> LabelMetrics:
    g = np.asarray(gold, dtype=object)
    p = np.asarray(pred, dtype=object)
    if len(g) != len(p):
        raise ValueError("gold and pred differ in length")
    is_oos = g == oos_label if oos_label is not None else np.zeros(len(g), dtype=bool)
    pred_oos = p == oos_label if oos_label is not None else np.zeros(len(p), dtype=bool)
    ins = ~is_oos
    acc = float((g[ins] == p[ins]).mean()) if ins.any() else None
    recall = float(pred_oos[is_oos].mean()) if is_oos.any() else None
    precision = float(is_oos[pred_oos].mean()) if pred_oos.any() else None
    confusions = Counter((a, b) for a, b in zip(g, p, strict=True) if a != b)
    return LabelMetrics(
        n=len(g),
        in_scope_accuracy=acc,
        oos_recall=recall,
        oos_precision=precision,
        macro_f1=macro_f1(g, p),
        top_confusions=[(a, b, c) for (a, b), c in confusions.most_common(top)],
    )


def macro_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    """Unweighted mean F1 over the gold labels (labels only ever predicted do not count)."""
    scores = []
    for lab in sorted(set(gold.tolist())):
        tp = float(((gold == lab) & (pred == lab)).sum())
        fp = float(((gold != lab) & (pred == lab)).sum())
        fn = float(((gold == lab) & (pred != lab)).sum())
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


@dataclass(frozen=True)
class RoutingMetrics:
    n: int
    weak_accuracy: float
    strong_accuracy: float
    apgr: float
    cpt50: float  # fraction of calls to the strong model needed for PGR >= 50%
    cpt80: float
    cost_saved_at_95: float  # 1 - strong-call fraction needed for 95% of strong accuracy

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def quality_curve(score: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """Expected accuracy when the k highest-scoring prompts go to the strong model, k=0..n.

    Tied scores share their gain evenly: a constant score then is exactly the random router.
    """
    s = np.asarray(score, dtype=np.float64)
    gain = np.asarray(strong, dtype=np.float64) - np.asarray(weak, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    s, gain = s[order], gain[order]
    _, starts, counts = np.unique(-s, return_index=True, return_counts=True)
    for a, c in zip(starts, counts, strict=True):
        if c > 1:
            gain[a : a + c] = gain[a : a + c].mean()
    n = len(s)
    return (float(np.sum(weak)) + np.r_[0.0, np.cumsum(gain)]) / n


def routing_metrics(
    score: Sequence[float] | np.ndarray, weak: Sequence[bool], strong: Sequence[bool]
) -> RoutingMetrics:
    w = np.asarray(weak, dtype=np.float64)
    st = np.asarray(strong, dtype=np.float64)
    n = len(w)
    if n == 0:
        raise ValueError("no rows")
    perf = quality_curve(np.asarray(score, dtype=np.float64), w, st)
    frac = np.arange(n + 1) / n
    w_acc, s_acc = float(w.mean()), float(st.mean())
    span = s_acc - w_acc
    pgr = (perf - w_acc) / span if span > 0 else np.ones_like(perf)
    apgr = float(np.sum((pgr[1:] + pgr[:-1]) / 2) / n)

    def first(mask: np.ndarray) -> float:
        hits = np.flatnonzero(mask)
        return float(frac[hits[0]]) if len(hits) else 1.0

    return RoutingMetrics(
        n=n,
        weak_accuracy=w_acc,
        strong_accuracy=s_acc,
        apgr=apgr,
        cpt50=first(pgr >= 0.5 - 1e-12),
        cpt80=first(pgr >= 0.8 - 1e-12),
        cost_saved_at_95=1.0 - first(perf >= 0.95 * s_acc - 1e-12),
    )
