"""The `classifier train|predict|eval` contract on tiny files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from classifiers.cli import add_subcommands, main
from tests.unit.test_classifiers_helpers import (
    make_escalation_rows,
    make_rows,
    tiny_encoder,
    write_jsonl,
)


def test_subcommands_mount_on_a_foreign_parser() -> None:
    parser = argparse.ArgumentParser(prog="slm-router")
    top = parser.add_subparsers(dest="area")
    add_subcommands(top.add_parser("classifier").add_subparsers(dest="command"))
    args = parser.parse_args(["classifier", "predict", "--model", "m", "--data", "d", "--out", "o"])
    assert args.command == "predict" and callable(args.func)


def test_train_predict_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", make_rows(10, seed=1, oos=6))
    val_rows = make_rows(5, seed=2, oos=5)
    val = write_jsonl(tmp_path / "val.jsonl", val_rows)
    model = tmp_path / "model"
    assert (
        main(
            [
                "train",
                "--data",
                str(train),
                "--val",
                str(val),
                "--label-field",
                "domain",
                "--oos-label",
                "oos",
                "--kind",
                "tfidf",
                "--seed",
                "1",
                "--out",
                str(model),
            ]
        )
        == 0
    )
    assert (model / "metadata.json").exists()

    inputs = write_jsonl(
        tmp_path / "in.jsonl", [{"text": r["text"]} for r in val_rows] + [{"text": ""}]
    )
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--model", str(model), "--data", str(inputs), "--out", str(out)]) == 0
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(preds) == len(val_rows) + 1
    for p in preds:
        assert list(p) == ["label", "confidence", "out_of_scope", "escalate"]
        assert p["escalate"] is None
        assert (p["label"] == "oos") == p["out_of_scope"]
    correct = sum(p["label"] == r["domain"] for p, r in zip(preds, val_rows, strict=False))
    assert correct / len(val_rows) >= 0.8

    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "--model",
                str(model),
                "--data",
                str(val),
                "--label-field",
                "domain",
                "--oos-label",
                "oos",
                "--json",
                "--latency-queries",
                "5",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    for key in (
        "in_scope_accuracy",
        "oos_recall",
        "oos_precision",
        "macro_f1",
        "top_confusions",
        "latency_ms_p50",
        "latency_ms_p99",
        "throughput_qps",
    ):
        assert key in report
    assert report["in_scope_accuracy"] == pytest.approx(
        sum(
            p["label"] == r["domain"]
            for p, r in zip(preds, val_rows, strict=False)
            if r["domain"] != "oos"
        )
        / 15
    )
    acc, rec = 100 * report["in_scope_accuracy"], 100 * report["oos_recall"]
    assert report["headline"].startswith(f"in-scope accuracy {acc:.2f}%, OOS recall {rec:.1f}%")
    assert f"at threshold {report['threshold']:.4f}" in report["headline"]


def test_escalation_train_and_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_jsonl(tmp_path / "esc.jsonl", make_escalation_rows(100, seed=3))
    model = tmp_path / "esc"
    assert main(["train", "--data", str(data), "--task", "escalation", "--out", str(model)]) == 0
    capsys.readouterr()
    assert (
        main(
            ["eval", "--model", str(model), "--data", str(data), "--json", "--latency-queries", "3"]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert {"apgr", "cpt50", "cpt80", "cost_saved_at_95"} <= set(report)
    assert report["headline"].startswith(f"APGR {report['apgr']:.3f}, cost saved at 95%")
    out = tmp_path / "p.jsonl"
    assert main(["predict", "--model", str(model), "--data", str(data), "--out", str(out)]) == 0
    first = json.loads(out.read_text().splitlines()[0])
    assert 0.0 <= first["escalate"] <= 1.0


def test_labels_task_requires_label_field(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", make_rows(3, seed=0))
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "m")]) == 2


def test_train_without_kind_uses_the_default_per_task(tmp_path: Path) -> None:
    encoder = tiny_encoder(tmp_path / "enc")
    data = write_jsonl(tmp_path / "d.jsonl", make_rows(8, seed=0, oos=4))
    labels, esc = tmp_path / "labels", tmp_path / "esc"
    params = json.dumps({"encoder": encoder})
    argv = ["train", "--data", str(data), "--label-field", "domain", "--params", params]
    assert main([*argv, "--out", str(labels)]) == 0
    assert json.loads((labels / "metadata.json").read_text())["kind"] == "embedding"
    esc_data = write_jsonl(tmp_path / "e.jsonl", make_escalation_rows(60, seed=1))
    assert main(["train", "--data", str(esc_data), "--task", "escalation", "--out", str(esc)]) == 0
    stored = json.loads((esc / "metadata.json").read_text())
    assert stored["kind"] == "tfidf" and stored["params"]["target"] == "gain"
