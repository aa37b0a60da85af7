"""The reference a drift window is compared with: the classifier's output distribution at
training time (label shares, a confidence histogram, the escalation rate).

It is what `classifiers.train` stored in the artifact's metadata (`reference`: label shares and
a confidence histogram on validation data). A classifier without one (the zero-training
`examples` kind) gets it from `classifiers.drift_reference` (a JSON file the policy names in
`drift.reference`), or drift stays "no_reference". Read from metadata only: no model is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from router.continuous.spec import DriftPolicy

OOS_LABEL = "out_of_scope"


class ReferenceLike(Protocol):
    """classifiers.artifact.Reference, or anything shaped like it."""

    @property
    def n(self) -> int: ...

    @property
    def label_freq(self) -> dict[str, float]: ...

    @property
    def confidence_bins(self) -> list[float]: ...

    @property
    def confidence_freq(self) -> list[float]: ...


@dataclass(frozen=True)
class DriftReference:
    label_freq: Mapping[str, float]
    confidence_bins: tuple[float, ...]
    confidence_freq: tuple[float, ...]
    oos_label: str = OOS_LABEL
    escalation_rate: float | None = None
    escalation_threshold: float | None = None
    n: int = 0
    source: str = ""  # e.g. "artifact 0f5392aef5c8"

    @property
    def oos_rate(self) -> float:
        return float(self.label_freq.get(self.oos_label, 0.0))

    @classmethod
    def from_reference(
        cls,
        ref: ReferenceLike,
        *,
        oos_label: str | None = None,
        escalation: ReferenceLike | None = None,
        escalation_threshold: float | None = None,
        escalation_label: str = "weak_fails",
        source: str = "",
    ) -> DriftReference:
        """From an artifact's `reference`; `escalation` is the escalation artifact's reference,
        whose label shares give the escalation rate at its calibrated threshold."""
        esc_rate = None
        if escalation is not None and escalation_threshold is not None:
            esc_rate = float(escalation.label_freq.get(escalation_label, 0.0))
        return cls(
            label_freq=dict(ref.label_freq),
            confidence_bins=tuple(ref.confidence_bins),
            confidence_freq=tuple(ref.confidence_freq),
            oos_label=oos_label or OOS_LABEL,
            escalation_rate=esc_rate,
            escalation_threshold=escalation_threshold if esc_rate is not None else None,
            n=int(ref.n),
            source=source,
        )


def reference_for_spec(
    spec: Any, policy: DriftPolicy, base_dir: str | None = None
) -> DriftReference:
    """The reference for the classifier a policy's ClassifierSpec names, read from artifact
    metadata only (no model load: it works for either placement). The policy's
    `drift.reference` file wins; the escalation artifact's reference gives the escalation rate.
    Raises LookupError when there is none (kind `examples` without `drift.reference`).

    A policy `oos_threshold` override moves the out-of-scope rate away from the reference's:
    that is reported as drift, which it is (of the outputs routing sees).
    """
    from classifiers.artifact import read_metadata
    from classifiers.drift_reference import load_reference

    def resolve(p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() or not base_dir else Path(base_dir) / path

    dom_meta = read_metadata(resolve(spec.path)) if spec.path else None
    esc_meta = read_metadata(resolve(spec.escalation_path)) if spec.escalation_path else None
    esc_ref = esc_meta.reference if esc_meta is not None else None
    esc_threshold = esc_meta.oos_threshold if esc_meta is not None else None
    oos = (dom_meta.oos_label if dom_meta is not None else None) or OOS_LABEL
    if policy.reference:
        ref, source = load_reference(resolve(policy.reference)), f"file {policy.reference}"
    elif dom_meta is not None and dom_meta.reference is not None:
        ref, source = dom_meta.reference, f"artifact {dom_meta.version}"
    else:
        raise LookupError("the classifier carries no drift reference; set drift.reference")
    return DriftReference.from_reference(
        ref,
        oos_label=oos,
        escalation=esc_ref,
        escalation_threshold=esc_threshold,
        source=source,
    )
