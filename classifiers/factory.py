"""Building the classifier a policy names: from YAML examples or a trained artifact."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from classifiers.base import Classifier
from classifiers.spec import ClassifierSpec


def _resolve(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(base_dir) / p


def build_classifier(
    spec: ClassifierSpec, examples: Mapping[str, Sequence[str]], base_dir: Path
) -> Classifier:
    """`examples` maps each route's label to its utterances (description included)."""
    if spec.kind == "examples":
        from classifiers.encoder import shared_encoder
        from classifiers.examples import ExamplesClassifier

        encoder = shared_encoder(
            spec.encoder,
            max_length=spec.max_length,
            backend=spec.backend,
            quantize=spec.quantize,
            threads=spec.torch_threads,
        )
        clf: Classifier = ExamplesClassifier(
            examples,
            encoder=encoder,
            temperature=spec.temperature,
            sim_threshold=spec.oos_threshold,
        )
    elif spec.kind == "keywords":
        raise ValueError("classifier kind 'keywords' is not implemented; use 'examples'")
    else:
        if spec.path is None:
            raise ValueError(f"classifier kind {spec.kind!r} needs `path` (a trained artifact)")
        clf = load_checked(_resolve(spec.path, base_dir), spec)
    if spec.escalation_path is not None:
        from classifiers.artifact import load_artifact
        from classifiers.composite import WithEscalation

        clf = WithEscalation(clf, load_artifact(_resolve(spec.escalation_path, base_dir)))
    return clf


def load_checked(path: Path, spec: ClassifierSpec) -> Classifier:
    from classifiers.artifact import load_artifact

    clf = load_artifact(path, oos_threshold=spec.oos_threshold)
    if spec.kind != "artifact" and clf.meta.kind != spec.kind:
        raise ValueError(
            f"{path} holds a {clf.meta.kind!r} artifact, the policy asks for {spec.kind!r}"
        )
    if clf.meta.task != "labels":
        raise ValueError(f"{path} is an escalation artifact; name it in `escalation_path`")
    return clf
