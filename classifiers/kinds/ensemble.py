"""Average of member kinds' probabilities (members share one class order)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.registry import ProbModel, kind_module

CONFIG_FILE = "ensemble.json"
DEFAULT_MEMBERS = ("tfidf", "embedding")


class EnsembleModel:
    def __init__(self, members: list[tuple[str, ProbModel]], weights: list[float]) -> None:
        self.members = members
        self.weights = weights
        self.classes = list(members[0][1].classes)
        for _, m in members:
            if list(m.classes) != self.classes:
                raise ValueError("ensemble members disagree on classes")

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        total = sum(self.weights)
        out = sum(
            w * m.predict_proba(texts) for (_, m), w in zip(self.members, self.weights, strict=True)
        )
        return np.asarray(out) / total

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for kind, m in self.members:
            m.save(directory / kind)
        config = {"members": [k for k, _ in self.members], "weights": self.weights}
        (directory / CONFIG_FILE).write_text(json.dumps(config))


def fit(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    seed: int,
    params: dict[str, Any],
    progress: bool,
) -> EnsembleModel:
    kinds = list(params.get("members", DEFAULT_MEMBERS))
    if "ensemble" in kinds:
        raise ValueError("an ensemble cannot contain an ensemble")
    weights = [float(w) for w in params.get("weights", [1.0] * len(kinds))]
    members = [
        (
            k,
            kind_module(k).fit(
                texts, labels, seed=seed, params=params.get(k, {}), progress=progress
            ),
        )
        for k in kinds
    ]
    return EnsembleModel(members, weights)


def load(directory: Path, meta: Any = None) -> EnsembleModel:
    config = json.loads((directory / CONFIG_FILE).read_text())
    members = [(k, kind_module(k).load(directory / k, None)) for k in config["members"]]
    return EnsembleModel(members, list(config["weights"]))
