"""Artifact directories: DIR/metadata.json plus whatever files the kind writes."""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from classifiers.base import ArtifactInfo, Classification, Classifier
from classifiers.registry import KINDS, ProbModel, kind_module
from classifiers.scoring import in_scope_view, make_classifications, oos_mask

__all__ = ["KINDS", "ArtifactMetadata", "ProbModel", "TrainedClassifier", "kind_module"]

METADATA = "metadata.json"
FORMAT = 1
ESCALATE = "weak_fails"
WEAK_OK = "weak_ok"
# target "gain": the four outcomes of (weak, strong); escalating pays P(strong only) and
# costs P(weak only), so the score ranks by the expected gain of escalating.
STRONG_ONLY, WEAK_ONLY = "strong_only", "weak_only"
OUTCOMES = ("both_fail", STRONG_ONLY, WEAK_ONLY, "both_ok")


def outcome(weak: bool, strong: bool) -> str:
    return OUTCOMES[2 * int(weak) + int(strong)]


def escalation_scores(probs: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """P(escalating helps) in [0, 1] from a model's class probabilities."""
    classes = list(classes)
    if ESCALATE in classes:
        return np.asarray(probs[:, classes.index(ESCALATE)], dtype=np.float64)
    if STRONG_ONLY in classes and WEAK_ONLY in classes:
        gain = probs[:, classes.index(STRONG_ONLY)] - probs[:, classes.index(WEAK_ONLY)]
        return np.asarray((1.0 + gain) / 2.0, dtype=np.float64)
    raise ValueError(f"not an escalation model: classes {classes[:6]}")


class Reference(BaseModel):
    """Predicted-label and confidence distribution on validation data, for drift checks."""

    model_config = ConfigDict(extra="forbid")
    n: int
    label_freq: dict[str, float]
    confidence_bins: list[float]
    confidence_freq: list[float]


class ArtifactMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int = FORMAT
    kind: Literal["tfidf", "embedding", "finetuned", "ensemble"]
    task: Literal["labels", "escalation"] = "labels"
    version: str
    classes: list[str] = Field(description="Model output order, OOS class included.")
    labels: list[str] = Field(description="In-scope labels.")
    oos_label: str | None = None
    oos_threshold: float = 0.0
    text_field: str = "text"
    label_field: str | None = None
    seed: int = 0
    data_sha256: str
    val_sha256: str | None = None
    created: str
    libraries: dict[str, str]
    params: dict[str, Any] = Field(default_factory=dict)
    validation: dict[str, Any] = Field(default_factory=dict)
    reference: Reference | None = None
    members: list[str] = Field(default_factory=list)
    fine_label_field: str | None = Field(
        None, description="Trained on this finer label; probabilities summed into `labels`."
    )
    fine_to_label: dict[str, str] | None = None
    group_field: str | None = Field(
        None, description="Escalation calibrated per group (classifiers.group_prior)."
    )


def library_versions() -> dict[str, str]:
    out = {}
    for name in ("slm-router", "scikit-learn", "numpy", "torch", "transformers"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


class TrainedClassifier(Classifier):
    """A trained ProbModel plus its metadata: applies the OOS rule or the escalation score."""

    def __init__(
        self, model: ProbModel, meta: ArtifactMetadata, *, oos_threshold: float | None = None
    ) -> None:
        self.model = model
        self.meta = meta
        self.oos_threshold = meta.oos_threshold if oos_threshold is None else oos_threshold

    @property
    def labels(self) -> Sequence[str]:
        return self.meta.labels

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.predict_proba(texts)

    def classify(self, texts: Sequence[str]) -> list[Classification]:
        if not texts:
            return []
        probs = self.probabilities(texts)
        if self.meta.task == "escalation":
            p_fail = escalation_scores(probs, self.model.classes)
            lab = np.where(p_fail >= self.oos_threshold, ESCALATE, WEAK_OK)
            return [
                Classification(
                    scores={ESCALATE: float(p), WEAK_OK: float(1 - p)},
                    label=str(lab[i]),
                    confidence=float(max(p, 1 - p)),
                    out_of_scope=False,
                    escalate=float(p),
                )
                for i, p in enumerate(p_fail)
            ]
        in_probs, labels, oos_mass = in_scope_view(probs, self.model.classes, self.meta.oos_label)
        return make_classifications(
            in_probs, labels, oos_mask(in_probs, oos_mass, self.oos_threshold)
        )

    def info(self) -> ArtifactInfo:
        return ArtifactInfo(
            kind=self.meta.kind,
            version=self.meta.version,
            data_sha256=self.meta.data_sha256,
            metadata=self.meta.model_dump(exclude={"reference"}),
        )


def read_metadata(directory: Path) -> ArtifactMetadata:
    path = Path(directory) / METADATA
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: not a classifier artifact")
    return ArtifactMetadata.model_validate(json.loads(path.read_text(encoding="utf-8")))


def write_metadata(directory: Path, meta: ArtifactMetadata) -> None:
    (Path(directory) / METADATA).write_text(meta.model_dump_json(indent=2), encoding="utf-8")


def load_model(directory: Path, meta: ArtifactMetadata) -> ProbModel:
    if meta.group_field:
        from classifiers import group_prior

        return group_prior.load(Path(directory))
    if meta.fine_to_label:
        from classifiers.grouped import FINE_DIR, GroupedModel

        inner: ProbModel = kind_module(meta.kind).load(Path(directory) / FINE_DIR, meta)
        return GroupedModel(inner, meta.fine_to_label)
    model: ProbModel = kind_module(meta.kind).load(Path(directory), meta)
    return model


def load_artifact(path: str | Path, *, oos_threshold: float | None = None) -> TrainedClassifier:
    directory = Path(path)
    meta = read_metadata(directory)
    return TrainedClassifier(load_model(directory, meta), meta, oos_threshold=oos_threshold)
