"""Frozen sentence embeddings + a logistic-regression head (stored as plain arrays)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.encoder import (
    DEFAULT_BACKEND,
    DEFAULT_MAX_LENGTH,
    SentenceEncoder,
    shared_encoder,
)
from classifiers.scoring import softmax

HEAD_FILE = "head.npz"
CONFIG_FILE = "embedding.json"


class EmbeddingModel:
    def __init__(
        self, encoder: SentenceEncoder, classes: list[str], coef: np.ndarray, intercept: np.ndarray
    ) -> None:
        self.encoder = encoder
        self.classes = classes
        self.coef = coef.astype(np.float32)
        self.intercept = intercept.astype(np.float32)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return probs_from_head(self.encoder.encode(texts), self.coef, self.intercept)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / HEAD_FILE, coef=self.coef, intercept=self.intercept)
        config = {
            "classes": self.classes,
            "encoder": self.encoder.name,
            "max_length": self.encoder.max_length,
            "backend": self.encoder.backend,
            "quantize": self.encoder.quantize,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))


def probs_from_head(x: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    logits = x @ coef.T + intercept
    if coef.shape[0] == 1:  # sklearn's binary head: one row, logit of the second class
        logits = np.concatenate([np.zeros_like(logits), logits], axis=1)
    return softmax(logits)


def encoder_from(params: dict[str, Any]) -> SentenceEncoder:
    return shared_encoder(
        params.get("encoder"),
        max_length=int(params.get("max_length", DEFAULT_MAX_LENGTH)),
        backend=str(params.get("backend", DEFAULT_BACKEND)),
        quantize=bool(params.get("quantize", True)),
    )


def fit_head(
    x: np.ndarray, labels: Sequence[str], *, seed: int, C: float
) -> tuple[list[str], np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    head = LogisticRegression(C=C, max_iter=3000, random_state=seed)
    head.fit(x, list(labels))
    return [str(c) for c in head.classes_], head.coef_, head.intercept_


def fit(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    seed: int,
    params: dict[str, Any],
    progress: bool,
) -> EmbeddingModel:
    encoder = encoder_from(params)
    x = encoder.encode(texts, progress=progress)
    classes, coef, intercept = fit_head(x, labels, seed=seed, C=float(params.get("C", 10.0)))
    return EmbeddingModel(encoder, classes, coef, intercept)


def load(directory: Path, meta: Any = None) -> EmbeddingModel:
    config = json.loads((directory / CONFIG_FILE).read_text())
    # Artifacts from before the backends embedded with torch (fp32 unless they say otherwise).
    config.setdefault("backend", "torch")
    config.setdefault("quantize", False)
    head = np.load(directory / HEAD_FILE)
    encoder = encoder_from(config)
    return EmbeddingModel(encoder, list(config["classes"]), head["coef"], head["intercept"])
