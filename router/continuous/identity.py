"""Which classifier a policy names: kind, version and training-data hash, read without loading
the model (artifact metadata, or for the zero-training `examples` kind the hash of the routes'
examples, which is what ExamplesClassifier reports as its version). The status route reports
it; the rollout log records it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from classifiers.spec import ClassifierSpec


def identify(
    kind: str, path: str | None, examples: Mapping[str, list[str]], base: Path | None = None
) -> dict[str, Any]:
    """{kind, version, data_sha256}; the artifact's own kind when its metadata reads."""
    out: dict[str, Any] = {"kind": kind, "version": None, "data_sha256": None}
    if path:
        from classifiers.artifact import read_metadata

        try:
            meta = read_metadata(resolve(path, base))
        except (OSError, ValueError):
            return out
        out.update(kind=meta.kind, version=meta.version, data_sha256=meta.data_sha256)
    elif kind == "examples":
        from classifiers.text import sha256_json

        sha = sha256_json({k: list(v) for k, v in examples.items()})
        out.update(version=sha[:12], data_sha256=sha)
    return out


def resolve(path: str, base: Path | None) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or base is None else base / p


def classifier_identity(
    spec: ClassifierSpec, examples: Mapping[str, list[str]], base: Path | None = None
) -> dict[str, Any]:
    """The live (or candidate) classifier's identity, with its escalation artifact's."""
    out = {"path": spec.path, **identify(spec.kind, spec.path, examples, base)}
    out = {k: out[k] for k in ("kind", "path", "version", "data_sha256")}
    if spec.escalation_path:
        esc = identify(spec.kind, spec.escalation_path, {}, base)
        out["escalation"] = esc
    return out
