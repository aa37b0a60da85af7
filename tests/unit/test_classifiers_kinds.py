"""Trained kinds on synthetic data: accuracy, OOS, determinism, artifact round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from classifiers import ClassifierSpec, build_classifier, load_artifact
from classifiers.evaluate import evaluate
from classifiers.train import train_artifact
from tests.unit.test_classifiers_helpers import (
    make_escalation_rows,
    make_rows,
    tiny_encoder,
    write_jsonl,
)

ODD_INPUTS = ["", "\ud800\udfff\ud800", "\x00" * 10, "word " * 20_000, "ünïcødé ✓"]


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_encoder(tmp_path_factory.mktemp("enc"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("data")
    return (
        write_jsonl(d / "train.jsonl", make_rows(12, seed=1, oos=8)),
        write_jsonl(d / "val.jsonl", make_rows(6, seed=2, oos=6)),
    )


def kind_params(kind: str, encoder: str) -> dict[str, Any]:
    emb = {"encoder": encoder, "C": 10.0}
    fin = {"encoder": encoder, "epochs": 6, "lr": 3e-3, "head_lr": 3e-2, "batch_size": 8}
    return {
        "tfidf": {},
        "embedding": emb,
        "finetuned": fin,
        "ensemble": {"members": ["tfidf", "embedding"], "embedding": emb},
    }[kind]


KINDS = ["tfidf", "embedding", "finetuned", "ensemble"]


@pytest.mark.parametrize("kind", KINDS)
def test_kind_trains_detects_oos_and_round_trips(
    kind: str, encoder_path: str, data: tuple[Path, Path], tmp_path: Path
) -> None:
    train, val = data
    out = tmp_path / kind
    meta = train_artifact(
        train,
        out,
        label_field="domain",
        val=val,
        oos_label="oos",
        kind=kind,
        seed=3,
        params=kind_params(kind, encoder_path),
    )
    stored = json.loads((out / "metadata.json").read_text())
    assert stored["kind"] == kind and stored["version"] == meta.version
    assert stored["labels"] == ["cooking", "math", "travel"]
    assert len(stored["data_sha256"]) == 64 and stored["libraries"]["numpy"]
    assert stored["reference"]["n"] == 24
    assert set(stored["validation"]) >= {"in_scope_accuracy", "oos_recall", "macro_f1"}

    clf = load_artifact(out)
    rows = [json.loads(line) for line in val.read_text().splitlines()]
    report = evaluate(clf, rows, label_field="domain", oos_label="oos", latency_queries=5)
    assert report["in_scope_accuracy"] >= 0.9
    assert report["oos_recall"] >= 0.5
    assert report["in_scope_accuracy"] == pytest.approx(stored["validation"]["in_scope_accuracy"])

    odd = clf.classify(ODD_INPUTS)
    assert len(odd) == len(ODD_INPUTS) and all(np.isfinite(c.confidence) for c in odd)
    assert clf.info().version == meta.version


@pytest.mark.parametrize("kind", ["tfidf", "finetuned"])
def test_same_seed_same_predictions(
    kind: str, encoder_path: str, data: tuple[Path, Path], tmp_path: Path
) -> None:
    train, val = data
    texts = [json.loads(line)["text"] for line in val.read_text().splitlines()]
    probs = []
    for run in ("a", "b"):
        train_artifact(
            train,
            tmp_path / run,
            label_field="domain",
            val=val,
            oos_label="oos",
            kind=kind,
            seed=7,
            params=kind_params(kind, encoder_path),
        )
        clf = load_artifact(tmp_path / run)
        probs.append(clf.probabilities(texts))
    assert np.allclose(probs[0], probs[1], atol=1e-6)


def test_no_val_uses_a_holdout_and_no_oos_label(data: tuple[Path, Path], tmp_path: Path) -> None:
    train, _ = data
    meta = train_artifact(train, tmp_path / "m", label_field="domain", kind="tfidf")
    assert meta.val_sha256 is None and meta.oos_threshold == 0.0
    assert "oos" in meta.labels  # without --oos-label, 'oos' is just another label


def test_escalation_artifact_scores_hard_prompts_higher(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "t.jsonl", make_escalation_rows(120, seed=0))
    meta = train_artifact(train, tmp_path / "esc", task="escalation", kind="tfidf", seed=0)
    assert meta.task == "escalation" and "apgr" in meta.validation
    clf = load_artifact(tmp_path / "esc")
    hard, easy = clf.classify(["solve the integral equation", "bake garlic sauce recipe"])
    assert hard.escalate is not None and easy.escalate is not None
    assert hard.escalate > easy.escalate
    rows = make_escalation_rows(200, seed=5)
    report = evaluate(clf, rows, latency_queries=0)
    assert report["apgr"] > 0.55  # the random router's expectation is 0.5


def test_factory_loads_artifact_with_escalation(data: tuple[Path, Path], tmp_path: Path) -> None:
    train, val = data
    train_artifact(
        train, tmp_path / "dom", label_field="domain", val=val, oos_label="oos", kind="tfidf"
    )
    esc_data = write_jsonl(tmp_path / "e.jsonl", make_escalation_rows(80, seed=0))
    train_artifact(esc_data, tmp_path / "esc", task="escalation")
    spec = ClassifierSpec(kind="tfidf", path="dom", escalation_path="esc", oos_threshold=0.99)
    clf = build_classifier(spec, {}, tmp_path)
    (c,) = clf.classify(["bake garlic sauce"])
    assert c.escalate is not None and 0.0 <= c.escalate <= 1.0
    assert c.out_of_scope  # the 0.99 override beats any calibrated threshold here
    assert "+esc." in clf.info().version
    any_kind = build_classifier(ClassifierSpec(kind="artifact", path="dom"), {}, tmp_path)
    assert any_kind.info().kind == "tfidf"
    with pytest.raises(ValueError, match="escalation"):
        build_classifier(ClassifierSpec(kind="artifact", path="esc"), {}, tmp_path)
    with pytest.raises(ValueError, match="embedding"):
        build_classifier(ClassifierSpec(kind="embedding", path="dom"), {}, tmp_path)


def test_escalation_target_strong_wins_changes_the_labels(tmp_path: Path) -> None:
    rows = make_escalation_rows(120, seed=4)
    data = write_jsonl(tmp_path / "t.jsonl", rows)
    a = train_artifact(
        data, tmp_path / "a", task="escalation", seed=0, params={"target": "weak_fails"}
    )
    b = train_artifact(
        data, tmp_path / "b", task="escalation", seed=0, params={"target": "strong_wins"}
    )
    assert a.version != b.version and b.params["target"] == "strong_wins"
    wins = sum(r["strong_correct"] and not r["weak_correct"] for r in rows)
    fails = sum(not r["weak_correct"] for r in rows)
    assert wins < fails  # so the two targets really are different label sets
    with pytest.raises(ValueError, match="target"):
        train_artifact(data, tmp_path / "c", task="escalation", params={"target": "nope"})


def test_escalation_target_gain_scores_the_expected_gain(tmp_path: Path) -> None:
    rows = make_escalation_rows(160, seed=5)
    data = write_jsonl(tmp_path / "t.jsonl", rows)
    meta = train_artifact(data, tmp_path / "g", task="escalation", params={"target": "gain"})
    assert set(meta.classes) <= {"both_fail", "strong_only", "weak_only", "both_ok"}
    clf = load_artifact(tmp_path / "g")
    hard, easy = clf.classify(["integral derivative proof", "bake garlic sauce"])
    assert hard.escalate is not None and easy.escalate is not None
    assert 0.0 <= easy.escalate < hard.escalate <= 1.0
    assert hard.label == "weak_fails" and set(hard.scores) == {"weak_fails", "weak_ok"}


def test_group_field_blends_the_groups_outcomes(tmp_path: Path) -> None:
    rows = make_escalation_rows(200, seed=6)
    for r in rows:  # the group is what the prompt is about: math prompts are the hard ones
        r["subject"] = "algebra" if "integral" in r["text"] or "proof" in r["text"] else "cooking"
    data = write_jsonl(tmp_path / "t.jsonl", rows)

    def train(name: str, weight: float) -> Any:
        params = {"target": "gain", "group_weight": weight}
        return train_artifact(
            data, tmp_path / name, task="escalation", kind="tfidf", group_field="subject",
            params=params,
        )  # fmt: skip

    meta = train("gp", 0.5)
    assert meta.group_field == "subject"
    assert (tmp_path / "gp" / "group_prior.json").is_file()
    hard, easy = load_artifact(tmp_path / "gp").classify(
        ["integral derivative proof", "bake sauce"]
    )
    assert hard.escalate is not None and easy.escalate is not None
    assert easy.escalate < hard.escalate
    # Weight 1 is the prompt model alone: the group term really changes the scores.
    assert train("alone", 1.0).version != meta.version
    alone = load_artifact(tmp_path / "alone").classify(["bake sauce"])[0]
    assert alone.escalate != easy.escalate
