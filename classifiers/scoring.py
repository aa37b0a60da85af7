"""Turning a probability matrix into Classifications: the one place OOS decisions are made."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from classifiers.base import Classification


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / max(temperature, 1e-6)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def in_scope_view(
    probs: np.ndarray, classes: Sequence[str], oos_class: str | None
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Split a model's output into in-scope scores and the explicit OOS class's mass.

    In-scope scores are left unnormalised: mass the model gave to OOS must lower the
    confidence of every domain, or the threshold could not see it.
    """
    if oos_class is None or oos_class not in classes:
        return probs, list(classes), np.zeros(len(probs))
    j = list(classes).index(oos_class)
    keep = [i for i in range(len(classes)) if i != j]
    return probs[:, keep], [classes[i] for i in keep], probs[:, j]


def oos_mask(in_probs: np.ndarray, oos_mass: np.ndarray, threshold: float) -> np.ndarray:
    top = in_probs.max(axis=1) if in_probs.size else np.zeros(len(oos_mass))
    return (top < threshold) | (oos_mass > top)


def make_classifications(
    in_probs: np.ndarray,
    labels: Sequence[str],
    out_of_scope: np.ndarray,
    escalate: np.ndarray | None = None,
) -> list[Classification]:
    results: list[Classification] = []
    for i, row in enumerate(in_probs):
        j = int(np.argmax(row))
        results.append(
            Classification(
                scores={lab: float(p) for lab, p in zip(labels, row, strict=True)},
                label=labels[j],
                confidence=float(row[j]),
                out_of_scope=bool(out_of_scope[i]),
                escalate=None if escalate is None else float(np.clip(escalate[i], 0.0, 1.0)),
            )
        )
    return results
