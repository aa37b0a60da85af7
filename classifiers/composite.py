"""A domain classifier paired with an escalation model: one Classification carries both."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from classifiers.base import ArtifactInfo, Classification, Classifier


class WithEscalation(Classifier):
    def __init__(self, domain: Classifier, escalation: Classifier) -> None:
        self.domain = domain
        self.escalation = escalation

    @property
    def labels(self) -> Sequence[str]:
        return self.domain.labels

    def classify(self, texts: Sequence[str]) -> list[Classification]:
        domains = self.domain.classify(texts)
        escalations = self.escalation.classify(texts)
        return [
            dataclasses.replace(d, escalate=e.escalate)
            for d, e in zip(domains, escalations, strict=True)
        ]

    def info(self) -> ArtifactInfo:
        d, e = self.domain.info(), self.escalation.info()
        return dataclasses.replace(
            d,
            version=f"{d.version}+esc.{e.version}",
            metadata={
                **d.metadata,
                "escalation": {"kind": e.kind, "version": e.version, "data_sha256": e.data_sha256},
            },
        )
