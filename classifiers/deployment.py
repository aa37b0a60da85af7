"""The classifier's Serve deployment: a thin batched wrapper around a Classifier."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ray import serve

from classifiers.base import Classification
from classifiers.spec import ClassifierSpec


@serve.deployment
class ClassifierDeployment:
    def __init__(
        self,
        spec: ClassifierSpec,
        examples: Mapping[str, Sequence[str]],
        max_batch_size: int,
        batch_wait_ms: float,
    ) -> None:
        from classifiers import build_classifier

        self.classifier = build_classifier(spec, examples, Path.cwd())
        self.classify.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        self.classify.set_batch_wait_timeout_s(batch_wait_ms / 1000)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def classify(self, texts: list[str]) -> list[Classification]:
        return self.classifier.classify(texts)
