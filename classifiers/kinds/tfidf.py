"""Word + char n-gram TF-IDF with a multinomial logistic regression (log-loss: calibrated)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.text import clean_all

MODEL_FILE = "tfidf.pkl"


class TfidfModel:
    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.classes: list[str] = [str(c) for c in pipeline.classes_]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.pipeline.predict_proba(clean_all(texts)))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        # Pickle: artifacts are trusted build outputs (like model weights); never load foreign ones.
        with (directory / MODEL_FILE).open("wb") as fh:
            pickle.dump(self.pipeline, fh, protocol=pickle.HIGHEST_PROTOCOL)
        (directory / "tfidf.json").write_text(json.dumps({"classes": self.classes}))


def build_pipeline(seed: int, params: dict[str, Any]) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline

    features = FeatureUnion(
        [
            ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)),
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=(2, 5),
                    sublinear_tf=True,
                    min_df=2,
                    max_features=200_000,
                ),
            ),
        ]
    )
    head = LogisticRegression(C=float(params.get("C", 20.0)), max_iter=2000, random_state=seed)
    return Pipeline([("features", features), ("head", head)])


def fit(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    seed: int,
    params: dict[str, Any],
    progress: bool,
) -> TfidfModel:
    pipeline = build_pipeline(seed, params)
    pipeline.fit(clean_all(texts), list(labels))
    return TfidfModel(pipeline)


def load(directory: Path, meta: Any = None) -> TfidfModel:
    with (directory / MODEL_FILE).open("rb") as fh:
        return TfidfModel(pickle.load(fh))
