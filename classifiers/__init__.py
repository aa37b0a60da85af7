"""Routing classifiers: texts in, Classification (domain scores, OOS flag, escalation) out.

Heavy libraries load lazily: importing this package costs only numpy and pydantic.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from classifiers.base import ArtifactInfo, Classification, Classifier
from classifiers.factory import build_classifier
from classifiers.spec import ClassifierSpec

if TYPE_CHECKING:
    from classifiers.artifact import TrainedClassifier


def load_artifact(path: str | Path, *, oos_threshold: float | None = None) -> TrainedClassifier:
    from classifiers.artifact import load_artifact as _load

    return _load(path, oos_threshold=oos_threshold)


__all__ = [
    "ArtifactInfo",
    "Classification",
    "Classifier",
    "ClassifierSpec",
    "build_classifier",
    "load_artifact",
]
