"""Per-group calibration for escalation: blend a prompt-level model with the group's prior.

On MMLU most of the escalation signal is the subject (how often the small model fails there);
the rest is the question itself. Training rows carry the group (e.g. `subject`); prompts at
serving time do not, so a second classifier of the same kind learns the group from the text and
the group term is sum_g P(g | text) * P(outcome | g), with P(outcome | g) counted on the training
rows (add-one smoothed). The model's output is

    weight * P_prompt(outcome | text) + (1 - weight) * sum_g P(g | text) P(outcome | g)

Measured by 5-fold cross-validation on the MMLU train half (docs/bench/classifiers.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.registry import ProbModel, kind_module

CONFIG_FILE = "group_prior.json"
PROMPT_DIR, GROUP_DIR = "prompt", "group"
DEFAULT_WEIGHT = 0.5
DEFAULT_GROUP_C = 10.0


def outcome_table(
    groups: Sequence[str], labels: Sequence[str], group_classes: list[str], classes: list[str]
) -> np.ndarray:
    """(groups, classes): each group's label distribution, add-one smoothed."""
    counts = np.ones((len(group_classes), len(classes)))
    row = {g: i for i, g in enumerate(group_classes)}
    col = {c: j for j, c in enumerate(classes)}
    for g, lab in zip(groups, labels, strict=True):
        counts[row[g], col[lab]] += 1
    return counts / counts.sum(axis=1, keepdims=True)


class GroupPriorModel:
    def __init__(
        self,
        prompt: ProbModel,
        group: ProbModel,
        table: np.ndarray,
        weight: float,
        kind: str,
    ) -> None:
        self.prompt = prompt
        self.group = group
        self.table = np.asarray(table, dtype=np.float64)
        self.weight = weight
        self.kind = kind
        self.classes = list(prompt.classes)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        p = np.asarray(self.prompt.predict_proba(texts), dtype=np.float64)
        prior = np.asarray(self.group.predict_proba(texts), dtype=np.float64) @ self.table
        return self.weight * p + (1.0 - self.weight) * prior

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        self.prompt.save(directory / PROMPT_DIR)
        self.group.save(directory / GROUP_DIR)
        config = {
            "kind": self.kind,
            "weight": self.weight,
            "classes": self.classes,
            "groups": list(self.group.classes),
            "table": self.table.tolist(),
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config))


def fit(
    texts: Sequence[str],
    labels: Sequence[str],
    groups: Sequence[str],
    *,
    kind: str,
    seed: int,
    params: dict[str, Any],
    progress: bool,
) -> GroupPriorModel:
    module = kind_module(kind)
    prompt: ProbModel = module.fit(texts, labels, seed=seed, params=params, progress=progress)
    group_params = {**params, "C": float(params.get("group_C", DEFAULT_GROUP_C))}
    group: ProbModel = module.fit(texts, groups, seed=seed, params=group_params, progress=progress)
    table = outcome_table(groups, labels, list(group.classes), list(prompt.classes))
    weight = float(params.get("group_weight", DEFAULT_WEIGHT))
    return GroupPriorModel(prompt, group, table, weight, kind)


def load(directory: Path) -> GroupPriorModel:
    config = json.loads((Path(directory) / CONFIG_FILE).read_text())
    module = kind_module(config["kind"])
    prompt = module.load(Path(directory) / PROMPT_DIR, None)
    group = module.load(Path(directory) / GROUP_DIR, None)
    if list(group.classes) != config["groups"] or list(prompt.classes) != config["classes"]:
        raise ValueError(f"{directory}: group_prior.json does not match its member models")
    return GroupPriorModel(
        prompt, group, np.asarray(config["table"]), config["weight"], config["kind"]
    )
