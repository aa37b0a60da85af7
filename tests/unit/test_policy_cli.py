"""`slm-router policy validate|schema|explain|simulate`: the CLI contract ops rely on.

explain/simulate load the real `examples` classifier (MiniLM, shared per process: the first
test pays ~2 s). Expected simulation numbers are rebuilt from `explain`'s per-prompt plans,
not hard-coded.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from router.ops.cli import main

ROOT = Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "policies" / "fake.yaml"

BROKEN = """\
version: 1
experts:
  math: {backend: fake}
  general: {backend: fake}
routing:
  fallback: general
  routes:
    - domain: math
      experts: [mathh]
      min_confidance: 0.5
"""

PRICED = """\
version: 1
classifier: {kind: examples}
experts:
  code-fake: {backend: fake, price: {input_per_1m: 1.0, output_per_1m: 2.0}}
  math-fake: {backend: fake, price: {input_per_1m: 3.0, output_per_1m: 4.0}}
  general-fake: {backend: fake, price: {input_per_1m: 10.0, output_per_1m: 20.0}}
routing:
  fallback: general-fake
  routes:
    - domain: code
      experts: [code-fake]
      examples: [write a python function, fix this javascript bug, explain this SQL query]
    - domain: math
      experts: [math-fake]
      examples: [what is 17 times 23, solve for x in 3x + 5 = 20, derivative of x squared]
"""

TRAFFIC = [
    ("write a python function that parses a csv file", "code"),
    ("fix the bug in this javascript loop", "code"),
    ("explain what this SQL join query does", "code"),
    ("what is 45 times 12", "math"),
    ("solve for y in 2y - 4 = 10", "math"),
    ("what is the derivative of x cubed", "math"),
    ("recommend a good hiking trail near the alps", "out_of_scope"),
    ("what is 17 times 23", "code"),  # a deliberately wrong label: accuracy must drop for it
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["policy", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- validate --------------------------------------------------------------------------------


def test_validate_ok_files_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", str(FAKE), str(ROOT / "policies" / "default.yaml"))
    assert code == 0
    assert out.splitlines() == [f"{FAKE}: ok", f"{ROOT / 'policies' / 'default.yaml'}: ok"]


def test_validate_broken_file_exact_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN)
    code, out, _ = run(capsys, "validate", str(FAKE), str(bad))
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"{FAKE}: ok"
    # The schema error stops cross-checks (they need a valid document): fix it, then see them.
    assert (
        f"{bad}:10:7: error: routing.routes[0].min_confidance: unknown key 'min_confidance'; "
        "did you mean 'min_confidence'?" in lines
    )
    assert lines[-1] == f"{bad}: 1 error(s), 0 warning(s)"
    bad.write_text(BROKEN.replace("      min_confidance: 0.5\n", ""))
    code, out, _ = run(capsys, "validate", str(bad))
    assert code == 1
    assert out.splitlines() == [
        f"{bad}:9:17: error: routing.routes[0].experts[0]: unknown expert 'mathh'; "
        "did you mean 'math'?",
        f"{bad}: 1 error(s), 0 warning(s)",
    ]


def test_validate_json_and_unreadable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN.replace("      min_confidance: 0.5\n", ""))
    missing = tmp_path / "nope.yaml"
    code, out, _ = run(capsys, "validate", "--json", str(bad), str(missing))
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False
    [issue] = doc["files"][str(bad)]
    assert (issue["line"], issue["column"], issue["path"]) == (
        9,
        17,
        "routing.routes[0].experts[0]",
    )
    assert issue["suggestion"] == "did you mean 'math'?"
    assert "cannot read the file" in doc["files"][str(missing)][0]["message"]


def test_validate_warning_alone_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    warn = tmp_path / "warn.yaml"
    warn.write_text(BROKEN.replace("[mathh]\n      min_confidance: 0.5", "[math, math]"))
    code, out, _ = run(capsys, "validate", str(warn))
    assert code == 0
    assert out.splitlines()[-1] == f"{warn}: ok (1 warning(s))"
    assert out.splitlines()[0].startswith(f"{warn}:9:")


def test_validate_checks_routes_against_artifact_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    art = tmp_path / "artifacts" / "clf"
    art.mkdir(parents=True)
    (art / "metadata.json").write_text(json.dumps({"labels": ["math", "code"]}))
    doc = BROKEN.replace(
        "[mathh]\n      min_confidance: 0.5", "[math]\n    - {domain: maths, experts: [math]}"
    )
    doc = doc.replace(
        "version: 1\n", "version: 1\nclassifier: {kind: artifact, path: artifacts/clf}\n"
    )
    policy = tmp_path / "p.yaml"
    policy.write_text(doc)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "validate", "p.yaml")
    assert code == 1
    assert (
        "p.yaml:11:16: error: routing.routes[1].domain: unreachable route: "
        "the classifier has no domain 'maths'; did you mean 'math'?" in out
    )
    assert "maths" in out
    # Without the artifact on disk: a warning on classifier.path, not an error.
    (art / "metadata.json").unlink()
    art.rmdir()
    code, out, _ = run(capsys, "validate", "p.yaml")
    assert code == 0
    assert out.startswith("p.yaml:2:36: warning: classifier.path: classifier artifact")


def test_invalid_policy_is_refused_by_explain_and_simulate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN)
    traffic = tmp_path / "t.jsonl"
    traffic.write_text('{"text": "hi"}\n')
    for argv in (("explain", str(bad), "hi"), ("simulate", str(bad), "--traffic", str(traffic))):
        code, out, err = run(capsys, *argv)
        assert code == 1
        assert out == ""
        assert f"{bad}:10:7: error: routing.routes[0].min_confidance" in err


# --- schema ----------------------------------------------------------------------------------


def test_schema_is_json_with_the_document_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["$schema"].endswith("2020-12/schema")
    assert set(schema["properties"]) == {
        "version",
        "name",
        "classifier",
        "experts",
        "routing",
        "gateway",
        "classifier_rollout",
        "drift",
        "feedback",
    }
    assert {"experts", "routing"} <= set(schema["required"])
    assert schema["additionalProperties"] is False
    target = tmp_path / "schema.json"
    assert run(capsys, "schema", "--out", str(target))[0] == 0
    assert json.loads(target.read_text()) == schema


def test_schema_accepts_shipped_policies_and_rejects_typos(
    capsys: pytest.CaptureFixture[str],
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    _, out, _ = run(capsys, "schema")
    schema = json.loads(out)
    doc = yaml.safe_load(FAKE.read_text())
    jsonschema.validate(doc, schema)
    doc["routing"]["routes"][0]["min_confidance"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)


# --- explain ---------------------------------------------------------------------------------


def explain(capsys: pytest.CaptureFixture[str], policy: Path, prompt: str, *extra: str) -> Any:
    code, out, _ = run(capsys, "explain", str(policy), prompt, "--json", *extra)
    doc = json.loads(out)
    assert code == (1 if "error" in doc else 0)
    return doc


def test_explain_plan_follows_the_classification(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    policy = yaml.safe_load(FAKE.read_text())
    first_choice = {r["domain"]: r["experts"][0] for r in policy["routing"]["routes"]}
    doc = explain(capsys, FAKE, "write a python function that sorts a list of numbers")
    c, plan = doc["classification"], doc["plan"]
    assert doc["classifier"]["kind"] == "examples"
    top = [label for label, _ in c["top"]]
    assert top[0] == c["label"] and set(top) == {"code", "math"}
    assert c["top"][0][1] == pytest.approx(c["confidence"], abs=1e-6)
    assert plan["domain"] == c["label"]
    assert plan["out_of_scope"] == c["out_of_scope"]
    if c["out_of_scope"]:
        assert plan["expert"] == policy["routing"]["fallback"]
        assert plan["trace"] == ["out_of_scope"]
    else:
        assert plan["expert"] == first_choice[c["label"]]
        assert plan["trace"] == [f"domain:{c['label']}"]
    assert plan["reason"]


def test_explain_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", str(FAKE), "what is 17 times 23")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("classifier: examples")
    assert any(line.startswith("plan: ") for line in lines)
    assert any(line.startswith("reason: ") for line in lines)
    assert lines[-1].startswith("rules fired: ")


def test_explain_pins(capsys: pytest.CaptureFixture[str]) -> None:
    doc = explain(capsys, FAKE, "anything", "--model", "math-fake", "--team", "t1")
    assert doc["plan"]["expert"] == "math-fake"
    assert doc["plan"]["trace"] == ["pin"]
    assert doc["context"]["team"] == "t1"
    doc = explain(capsys, FAKE, "anything", "--model", "math-fakee")
    assert doc["error"]["code"] == "model_not_found"
    assert doc["error"]["status"] == 404
    assert "math-fake" in doc["error"]["message"]


# --- simulate --------------------------------------------------------------------------------


def write_traffic(path: Path, rows: list[tuple[str, str]], **extra: Any) -> Path:
    with path.open("w") as fh:
        for text, label in rows:
            fh.write(json.dumps({"text": text, "domain": label, **extra}) + "\n")
    return path


def routed(plan: dict[str, Any]) -> str:
    return "out_of_scope" if plan["out_of_scope"] else str(plan["domain"])


def test_simulate_matches_explain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "priced.yaml"
    policy.write_text(PRICED)
    traffic = write_traffic(tmp_path / "t.jsonl", TRAFFIC)
    completion = 10
    code, out, _ = run(
        capsys,
        "simulate",
        str(policy),
        "--traffic",
        str(traffic),
        "--label-field",
        "domain",
        "--json",
        "--tokens",
        "estimate",
        "--completion-tokens",
        str(completion),
    )
    assert code == 0
    report = json.loads(out)

    # The same numbers, rebuilt independently from one `explain` per prompt.
    prices = {"code-fake": (1.0, 2.0), "math-fake": (3.0, 4.0), "general-fake": (10.0, 20.0)}
    plans = [explain(capsys, policy, text)["plan"] for text, _ in TRAFFIC]
    correct = sum(routed(p) == label for p, (_, label) in zip(plans, TRAFFIC, strict=True))

    def cost(expert: str, text: str) -> float:
        p_in, p_out = prices[expert]
        return (math.ceil(len(text) / 4) * p_in + completion * p_out) / 1e6

    n = len(TRAFFIC)
    expected_cost = sum(cost(p["expert"], t) for p, (t, _) in zip(plans, TRAFFIC, strict=True))
    expected_base = sum(cost("general-fake", t) for t, _ in TRAFFIC)
    assert report["requests"] == n
    assert report["labeled"] == n
    assert report["routing_accuracy"] == pytest.approx(correct / n)
    assert report["routing_accuracy"] < 1.0  # the wrong label can't be matched
    assert report["by_expert"] == dict(Counter(p["expert"] for p in plans))
    assert report["by_domain"] == dict(Counter(routed(p) for p in plans))
    assert report["cost_per_1k"] == pytest.approx(expected_cost * 1000 / n)
    assert report["baseline_cost_per_1k"] == pytest.approx(expected_base * 1000 / n)
    assert report["savings"] == pytest.approx(1 - expected_cost / expected_base)
    assert report["tokens"]["completion_per_request"] == completion
    assert set(report["tokens"]["counted_with"].values()) == {"estimate: ceil(chars / 4)"}


def test_simulate_without_labels_pins_and_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    traffic = tmp_path / "t.jsonl"
    rows = [
        {"text": "what is 17 times 23"},
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "fix this javascript bug"},
            ]
        },
        {"text": "anything", "model": "math-fake"},
        {"text": "anything", "model": "nope"},
    ]
    traffic.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, _ = run(capsys, "simulate", str(FAKE), "--traffic", str(traffic), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["requests"] == 3
    assert report["refused"] == {"model_not_found": 1}
    assert report["routing_accuracy"] is None
    assert report["by_rule"]["pin"] == 1
    for key in ("by_expert", "by_domain", "cost_per_1k", "baseline_cost_per_1k", "savings"):
        assert key in report
    # fake.yaml has no prices: nothing costs anything, and the report says so.
    assert report["cost_per_1k"] == report["baseline_cost_per_1k"] == report["savings"] == 0
    assert "general-fake" in report["unpriced"]


def test_simulate_table_and_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    traffic = write_traffic(tmp_path / "t.jsonl", TRAFFIC[:3])
    out_dir = tmp_path / "report"
    code, out, err = run(
        capsys,
        "simulate",
        str(FAKE),
        "--traffic",
        str(traffic),
        "--label-field",
        "domain",
        "--out",
        str(out_dir),
    )
    assert code == 0
    assert out.startswith("requests: 3 routed, 0 refused, 3 labelled")
    assert "routing accuracy (domain):" in out
    report = json.loads((out_dir / "report.json").read_text())
    assert report["requests"] == 3
    png = (out_dir / "routing.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "report.json" in err


def test_simulate_bad_traffic_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    traffic = tmp_path / "t.jsonl"
    traffic.write_text('{"text": "ok"}\n{"prompt": "no text field"}\n')
    code, _, err = run(capsys, "simulate", str(FAKE), "--traffic", str(traffic))
    assert code == 1
    assert f"{traffic}:2: no 'text' string" in err
