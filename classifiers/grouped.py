"""Train on fine labels, answer in coarse ones: P(domain) = sum of P(intent) over its intents.

Measured on CLINC150 (docs/bench/classifiers.md): 150 intents separate better than 10 broad
domains, and the out-of-scope decision is sharper at the intent level, so a domain router
trained on intents beats one trained on domains directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from classifiers.registry import ProbModel

FINE_DIR = "fine"


def fine_to_coarse(fine: Sequence[str], coarse: Sequence[str]) -> dict[str, str]:
    """The mapping the rows imply; each fine label must belong to exactly one coarse label."""
    mapping: dict[str, str] = {}
    for i, (f, c) in enumerate(zip(fine, coarse, strict=True)):
        if mapping.setdefault(f, c) != c:
            raise ValueError(
                f"row {i + 1}: fine label {f!r} appears under {mapping[f]!r} and {c!r}; "
                "each fine label must belong to one coarse label"
            )
    return mapping


class GroupedModel:
    def __init__(self, inner: ProbModel, mapping: Mapping[str, str]) -> None:
        missing = [c for c in inner.classes if c not in mapping]
        if missing:
            raise ValueError(f"fine labels without a coarse label: {missing[:5]}")
        self.inner = inner
        self.mapping = dict(mapping)
        self.classes = sorted({mapping[c] for c in inner.classes})
        column = {c: j for j, c in enumerate(self.classes)}
        self._sum = np.zeros((len(inner.classes), len(self.classes)), dtype=np.float64)
        for i, c in enumerate(inner.classes):
            self._sum[i, column[mapping[c]]] = 1.0

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.inner.predict_proba(texts), dtype=np.float64) @ self._sum

    def save(self, directory: Path) -> None:
        self.inner.save(Path(directory) / FINE_DIR)
