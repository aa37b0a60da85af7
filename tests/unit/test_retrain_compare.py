"""Retraining from feedback on tiny synthetic data: a worse candidate is refused unless forced."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from classifiers.artifact import load_artifact
from classifiers.retrain import (
    EXIT_REFUSED,
    RetrainSettings,
    Row,
    check,
    main,
    retrain,
    sign_test_p,
    split,
)
from classifiers.train import Dataset, save_classifier, train_datasets

WORDS = {
    "math": ["integral", "derivative", "equation", "algebra", "matrix", "prime"],
    "cooking": ["recipe", "bake", "oven", "flour", "simmer", "garlic"],
    "travel": ["flight", "hotel", "passport", "airport", "luggage", "visa"],
}
FILLER = ["please", "help", "me", "with", "the", "my", "how", "do", "i", "what"]


def make(n: int, seed: int, labels: dict[str, str] | None = None) -> list[Row]:
    """n prompts per domain; `labels` relabels a domain (poisoned feedback)."""
    rng = random.Random(seed)
    out = []
    for domain, words in WORDS.items():
        for _ in range(n):
            picked = rng.sample(words, 2) + rng.sample(FILLER, 3)
            rng.shuffle(picked)
            out.append(Row(" ".join(picked), (labels or {}).get(domain, domain)))
    return out


def write(path: Path, rows: list[Row], label_field: str) -> Path:
    path.write_text(
        "".join(json.dumps({"text": r.text, label_field: r.label}) + "\n" for r in rows)
    )
    return path


@pytest.fixture(scope="module")
def current(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = make(25, 1)
    clf = train_datasets(
        Dataset([r.text for r in base], [r.label for r in base]),
        Dataset([r.text for r in make(5, 2)], [r.label for r in make(5, 2)]),
        kind="tfidf",
        seed=0,
    )
    out = tmp_path_factory.mktemp("current")
    save_classifier(clf, out)
    return out


SETTINGS = RetrainSettings(kind="tfidf", label_field="domain", feedback_weight=3)


def test_poisoned_feedback_gives_a_worse_candidate_that_is_refused(current: Path) -> None:
    poisoned = make(30, 3, labels={"math": "cooking", "cooking": "math"})
    result = retrain(make(25, 1), poisoned, load_artifact(current), SETTINGS, make(10, 4))
    rep = result.report
    base = rep["slices"]["base"]
    assert base["n"] == 30 and rep["slices"]["feedback"]["n"] == 27
    assert base["candidate"]["macro_f1"] < base["current"]["macro_f1"]
    assert base["verdict"] == "worse" and rep["verdict"] == "worse"
    assert rep["promotable"] is False and rep["forced"] is False
    # the paired count agrees with the accuracies it comes from
    n = base["n"]
    gap = base["only_current_right"] - base["only_candidate_right"]
    assert gap == round((base["current"]["accuracy"] - base["candidate"]["accuracy"]) * n)


def test_helpful_feedback_gives_a_promotable_candidate(current: Path) -> None:
    # The live model never saw "travel" phrased with these words; feedback teaches them.
    extra = {"travel": ["cruise", "ferry", "itinerary", "hostel", "railpass", "backpack"]}
    rng = random.Random(5)
    new = [
        Row(" ".join(rng.sample(extra["travel"], 2) + rng.sample(FILLER, 3)), "travel")
        for _ in range(60)
    ]
    eval_rows = make(10, 4) + new[:20]
    result = retrain(make(25, 1), new[20:], load_artifact(current), SETTINGS, eval_rows)
    rep = result.report
    assert rep["verdict"] == "better" and rep["promotable"] is True
    check_f1 = rep["slices"]["base"]["checks"]["macro_f1"]
    assert check_f1["delta"] > 0 and check_f1["verdict"] == "better"


def test_split_is_seeded_and_disjoint() -> None:
    rows = make(10, 1)
    kept, held = split(rows, 0.3, seed=7)
    assert split(rows, 0.3, seed=7) == (kept, held)
    assert len(held) == 9 and sorted(kept + held, key=id) == sorted(rows, key=id)


def test_cli_exit_code_and_force(current: Path, tmp_path: Path) -> None:
    base = write(tmp_path / "base.jsonl", make(25, 1), "domain")
    feedback = write(
        tmp_path / "fb.jsonl", make(30, 3, labels={"math": "cooking", "cooking": "math"}), "domain"
    )
    ev = write(tmp_path / "eval.jsonl", make(10, 4), "domain")
    args = [
        "retrain",
        "--base-data",
        str(base),
        "--feedback",
        str(feedback),
        "--current",
        str(current),
        "--eval",
        str(ev),
        "--feedback-weight",
        "3",
        "--json",
    ]
    out = tmp_path / "cand"
    assert main([*args, "--out", str(out)]) == EXIT_REFUSED
    report: dict[str, Any] = json.loads((out / "comparison.json").read_text())
    assert report["promotable"] is False
    assert load_artifact(out).meta.version == report["candidate"]["version"]
    assert "| base |" in (out / "comparison.md").read_text()

    forced = tmp_path / "forced"
    assert main([*args, "--out", str(forced), "--force"]) == 0
    report = json.loads((forced / "comparison.json").read_text())
    assert (report["verdict"], report["promotable"], report["forced"]) == ("worse", True, True)


def test_sign_test_matches_hand_computed_binomial_tails() -> None:
    assert sign_test_p(10, 0) == pytest.approx(2 / 1024)
    assert sign_test_p(5, 1) == pytest.approx(2 * (1 + 6) / 64)
    assert sign_test_p(3, 3) == 1.0 and sign_test_p(0, 0) == 1.0


def test_a_drop_the_slice_cannot_tell_from_noise_is_not_worse() -> None:
    # 100 rows; the live model gets one more right than the candidate: accuracy -0.01, p = 1
    cur = {"accuracy": 0.81, "_right": [True] * 81 + [False] * 19, "_oos": [False] * 100}
    cand = {"accuracy": 0.80, "_right": [True] * 80 + [False] * 20, "_oos": [False] * 100}
    assert check("accuracy", cur, cand, RetrainSettings())["verdict"] == "same"
    assert check("accuracy", cur, cand, RetrainSettings(alpha=1.0))["verdict"] == "worse"
    # OOS recall looks only at the OOS rows: here the candidate misses 12 of 15 the live catches
    oos = [True] * 15 + [False] * 85
    cur = {"oos_recall": 1.0, "_right": [True] * 100, "_oos": oos}
    cand = {"oos_recall": 0.2, "_right": [True] * 3 + [False] * 12 + [True] * 85, "_oos": oos}
    got = check("oos_recall", cur, cand, RetrainSettings())
    assert (got["only_current_right"], got["only_candidate_right"]) == (12, 0)
    assert got["p_value"] == pytest.approx(2 / 4096) and got["verdict"] == "worse"
