"""The classifier interface: texts in, one Classification per text out. Pure Python, no Ray."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Classification:
    scores: Mapping[str, float]  # label -> probability-like score in [0, 1]
    label: str  # top in-scope label (even when out_of_scope is set)
    confidence: float  # score of `label`
    out_of_scope: bool
    escalate: float | None = None  # P(small model fails) in [0, 1], where the model has one

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "out_of_scope": self.out_of_scope,
            "escalate": None if self.escalate is None else round(self.escalate, 6),
            "scores": {k: round(v, 6) for k, v in self.scores.items()},
        }


@dataclass(frozen=True)
class ArtifactInfo:
    """Identity of a loaded model, reported on /v1/models and /v1/router/status."""

    kind: str
    version: str
    data_sha256: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


class Classifier(abc.ABC):
    @property
    @abc.abstractmethod
    def labels(self) -> Sequence[str]: ...

    @abc.abstractmethod
    def classify(self, texts: Sequence[str]) -> list[Classification]:
        """Score a batch. Must accept any str (empty, huge, odd unicode) without raising."""

    def info(self) -> ArtifactInfo:
        return ArtifactInfo(kind=type(self).__name__, version="0")
