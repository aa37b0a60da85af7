"""The shipped CLINC150 policy simulated on CLINC150 data: the CLI's routing accuracy must equal
the one rebuilt from the artifact's own predictions. Needs ../shared data and the artifact
(git-ignored): when it is missing, the test builds it with the documented command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.ops.cli import main

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT.parent / "shared" / "data" / "clinc150" / "train.jsonl"
VAL = ROOT.parent / "shared" / "data" / "clinc150" / "val.jsonl"
ARTIFACT = ROOT / "artifacts" / "clinc150-domain"
POLICY = ROOT / "policies" / "examples" / "clinc150.yaml"
ROWS = 300


@pytest.fixture(scope="module")
def clinc_artifact() -> Path:
    """The artifact clinc150.yaml names, built by the recipe in policies/README.md if missing."""
    if not (TRAIN.exists() and VAL.exists()):
        pytest.skip(f"{TRAIN.parent} absent (shared data not mounted)")
    if not (ARTIFACT / "metadata.json").exists():
        recipe = ["classifier", "train", "--data", str(TRAIN), "--val", str(VAL)]
        recipe += ["--label-field", "domain", "--fine-label-field", "intent"]
        recipe += ["--oos-label", "out_of_scope", "--params", '{"oos_weight": 0.22}']
        recipe += ["--out", str(ARTIFACT)]
        assert main(recipe) == 0
    return ARTIFACT


@pytest.fixture
def clinc_slice(clinc_artifact: Path) -> list[dict[str, str]]:
    rows = [json.loads(line) for line in VAL.read_text().splitlines() if line.strip()]
    # Every 10th row: all domains and the out-of-scope tail, in a few seconds.
    return rows[::10][:ROWS]


def test_clinc150_simulate_accuracy(
    clinc_slice: list[dict[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from classifiers import load_artifact

    monkeypatch.chdir(ROOT)
    traffic = tmp_path / "val.jsonl"
    traffic.write_text("".join(json.dumps(r) + "\n" for r in clinc_slice))
    code = main(
        [
            "policy",
            "simulate",
            str(POLICY),
            "--traffic",
            str(traffic),
            "--label-field",
            "domain",
            "--json",
            "--tokens",
            "estimate",
            "--no-progress",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0

    clf = load_artifact(ARTIFACT)
    preds = clf.classify([r["text"] for r in clinc_slice])
    routed = ["out_of_scope" if c.out_of_scope else c.label for c in preds]
    correct = sum(p == r["domain"] for p, r in zip(routed, clinc_slice, strict=True))
    assert report["requests"] == len(clinc_slice)
    assert report["routing_accuracy"] == pytest.approx(correct / len(clinc_slice))
    assert report["by_domain"].get("out_of_scope", 0) == routed.count("out_of_scope")
    # In-scope prompts at or over the routes' min_confidence (0.3) stay on the local expert;
    # out-of-scope and low-confidence ones pay the remote fallback.
    local = sum(not c.out_of_scope and c.confidence >= 0.3 for c in preds)
    assert report["by_expert"].get("smollm2", 0) == local
    assert report["by_expert"].get("generalist", 0) == len(preds) - local
    assert 0 < report["savings"] < 1
    assert report["unpriced"] == ["smollm2"]
