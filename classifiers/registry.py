"""What every trained kind provides, and the lazy registry of kinds by name."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

KINDS = ("tfidf", "embedding", "finetuned", "ensemble")


class ProbModel(Protocol):
    """What each kind's module provides: probabilities over `classes`, saved to a folder."""

    classes: list[str]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...

    def save(self, directory: Path) -> None: ...


def kind_module(kind: str) -> Any:
    """Lazy registry: a kind's heavy imports happen only when that kind is used."""
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}; expected one of {KINDS}")
    return importlib.import_module(f"classifiers.kinds.{kind}")
