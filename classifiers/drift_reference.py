"""Drift references for any classifier, and finding the one a classifier already carries.

Trained artifacts store their reference at training time (`metadata.json: reference`, written by
classifiers.train.reference_distribution). The zero-training `examples` kind has no training
step, so its reference is computed from a JSONL sample of in-distribution prompts with
`compute_reference` (the router reads it for a policy: router.continuous.drift), and
saved with `save_reference` to the file a policy names in `drift.reference`. For an artifact:

    python -m classifiers.drift_reference --artifact DIR --data val.jsonl --out ref.json

The binning and label convention match classifiers.train exactly (ten bins over [0, 1]; an
out-of-scope prediction counts as the OOS label), so the two kinds of reference compare alike.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.artifact import Reference
from classifiers.base import Classifier

DEFAULT_OOS_OUTPUT = "out_of_scope"
BINS = np.linspace(0.0, 1.0, 11)


def compute_reference(
    clf: Classifier,
    texts: Sequence[str],
    *,
    oos_output: str = DEFAULT_OOS_OUTPUT,
    batch_size: int = 64,
) -> Reference:
    """Label shares and a confidence histogram of `clf` on `texts` (in-distribution traffic)."""
    results = []
    for s in range(0, len(texts), batch_size):
        results.extend(clf.classify(list(texts[s : s + batch_size])))
    counts = Counter(oos_output if r.out_of_scope else r.label for r in results)
    conf = np.array([r.confidence for r in results], dtype=float)
    hist, _ = np.histogram(conf, bins=BINS)
    n = max(len(results), 1)
    return Reference(
        n=len(results),
        label_freq={k: v / n for k, v in sorted(counts.items())},
        confidence_bins=BINS.round(2).tolist(),
        confidence_freq=(hist / n).tolist(),
    )


def save_reference(ref: Reference, path: Path, **extra: Any) -> None:
    body = {"reference": ref.model_dump(), **extra}
    Path(path).write_text(json.dumps(body, indent=2), encoding="utf-8")


def load_reference(path: Path) -> Reference:
    """A file from save_reference, or an artifact's metadata.json (its `reference`)."""
    p = Path(path)
    if p.is_dir():
        p = p / "metadata.json"
    body = json.loads(p.read_text(encoding="utf-8"))
    if "reference" not in body or body["reference"] is None:
        raise ValueError(f"{p} holds no drift reference")
    return Reference.model_validate(body["reference"])


def oos_output_of(clf: Classifier) -> str:
    domain = getattr(clf, "domain", clf)
    meta = getattr(domain, "meta", None)
    return getattr(meta, "oos_label", None) or DEFAULT_OOS_OUTPUT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m classifiers.drift_reference",
        description="Compute a drift reference for an artifact from in-distribution JSONL.",
    )
    parser.add_argument("--artifact", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    from classifiers.artifact import load_artifact
    from classifiers.text import read_jsonl

    clf = load_artifact(args.artifact)
    texts = [str(r.get(args.text_field, "")) for r in read_jsonl(args.data)]
    ref = compute_reference(clf, texts, oos_output=oos_output_of(clf))
    save_reference(ref, args.out, artifact_version=clf.meta.version, data=str(args.data))
    print(json.dumps({"out": str(args.out), "n": ref.n}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
