"""The loader on a catalogue of broken policy files: each must name the exact line and path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from policies.checks import check_routing
from policies.errors import PolicyInvalid
from policies.issues import PolicyIssue, format_issues
from policies.loader import json_schema, load_file, load_text, validate_file, validate_text
from policies.schema import RoutingPolicy


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Classifier(_Strict):  # stands in for classifiers.spec.ClassifierSpec
    kind: Literal["keywords", "examples", "tfidf"] = "examples"


class Expert(_Strict):  # stands in for experts.spec.ExpertSpec
    backend: Literal["local", "remote", "fake"]
    slo_p95_ms: float | None = Field(None, gt=0)


class AppConfig(_Strict):  # stands in for the router's composed document
    version: Literal[1]
    classifier: Classifier = Classifier()
    experts: dict[str, Expert]
    routing: RoutingPolicy


DOMAINS = {"code", "math", "legal"}


def cross_check(cfg: AppConfig) -> list[PolicyIssue]:
    return check_routing(cfg.routing, set(cfg.experts), DOMAINS)


GOOD = """\
version: 1
classifier:
  kind: keywords
experts:
  moe: {backend: fake}
  code-small: {backend: fake, slo_p95_ms: 500}
  code-large: {backend: fake}
  math: {backend: fake}
routing:
  fallback: moe
  routes:
    - domain: code
      experts: [code-small, moe]
      min_confidence: 0.4
      escalate: {threshold: 0.7, expert: code-large}
    - domain: math
      experts:
        - math
  overrides:
    - name: sql
      expert: code-small
      keywords: [select]
  splits:
    - domain: code
      arms:
        - {expert: code-small, weight: 0.5}
        - {expert: code-large, weight: 0.5}
  shadow:
    - {expert: math, percent: 5}
  teams:
    acme: {allowed_experts: [moe, math]}
"""


def test_good_document_loads_without_issues(tmp_path: Path) -> None:
    f = tmp_path / "good.yaml"
    f.write_text(GOOD)
    result = validate_file(f, AppConfig, cross_check=cross_check)
    assert result.issues == ()
    assert result.ok and result.value is not None
    assert result.value.routing.routes[1].experts == ["math"]
    assert load_file(f, AppConfig, cross_check=cross_check) == result.value


# (case id, old, new, line, path, message fragment, suggestion fragment or None)
CATALOGUE: list[tuple[str, str, str, int, str, str, str | None]] = [
    ("unknown-expert-flow", "[code-small, moe]", "[code-small, mathh]", 13,
     "routing.routes[0].experts[1]", "unknown expert 'mathh'", "did you mean 'math'?"),
    ("unknown-expert-block", "        - math\n", "        - maths\n", 18,
     "routing.routes[1].experts[0]", "unknown expert 'maths'", "did you mean 'math'?"),
    ("unknown-fallback", "fallback: moe", "fallback: mo", 10,
     "routing.fallback", "unknown expert 'mo'", "did you mean 'moe'?"),
    ("typo-key", "fallback: moe", "fallbak: moe", 10,
     "routing.fallbak", "unknown key 'fallbak'", "did you mean 'fallback'?"),
    ("threshold-range", "threshold: 0.7", "threshold: 1.7", 15,
     "routing.routes[0].escalate.threshold", "less than or equal to 1", None),
    ("split-weights", "code-large, weight: 0.5}", "code-large, weight: 0.6}", 25,
     "routing.splits[0].arms", "split weights sum to 1.1, not 1", "add up to 1"),
    ("duplicate-route", "- domain: math", "- domain: code", 16,
     "routing.routes[1].domain", "unreachable route: domain 'code' is already routed by routes[0]",
     None),
    ("unknown-domain", "- domain: math", "- domain: maths", 16,
     "routing.routes[1].domain", "the classifier has no domain 'maths'", "did you mean 'math'?"),
    ("duplicate-key", "      min_confidence: 0.4\n",
     "      min_confidence: 0.4\n      min_confidence: 0.5\n", 15,
     "routing.routes[0].min_confidence", "duplicate key 'min_confidence' (first at line 14)", None),
    ("bad-number", "min_confidence: 0.4", "min_confidence: high", 14,
     "routing.routes[0].min_confidence", "valid number", None),
    ("literal-typo", "kind: keywords", "kind: keyword", 3,
     "classifier.kind", "Input should be", "did you mean 'keywords'?"),
    ("escalate-same-expert", "expert: code-large}", "expert: code-small}", 15,
     "routing.routes[0].escalate.expert", "already the route's first choice", None),
    ("bad-regex", "keywords: [select]", "regex: '(unclosed'", 22,
     "routing.overrides[0].regex", "invalid regex", None),
    ("catch-all-regex", "keywords: [select]", "regex: '.*'", 22,
     "routing.overrides[0].regex", "matches every prompt", None),
    ("team-unknown-expert", "[moe, math]", "[moe, mathh]", 31,
     "routing.teams.acme.allowed_experts[1]", "unknown expert 'mathh'", "did you mean 'math'?"),
    ("percent-range", "percent: 5}", "percent: 500}", 29,
     "routing.shadow[0].percent", "less than or equal to 100", None),
    ("expert-unknown-key", "moe: {backend: fake}", "moe: {backend: fake, slo_p95: 3}", 5,
     "experts.moe.slo_p95", "unknown key 'slo_p95'", "did you mean 'slo_p95_ms'?"),
    ("missing-key", "      experts:\n        - math\n", "", 16,
     "routing.routes[1].experts", "missing required key 'experts'", None),
    ("backend-literal", "code-large: {backend: fake}", "code-large: {backend: fakee}", 7,
     "experts.code-large.backend", "Input should be", "did you mean 'fake'?"),
    ("split-unknown-domain", "- domain: code\n      arms:", "- domain: cod\n      arms:", 24,
     "routing.splits[0].domain", "unknown route domain 'cod'", "did you mean 'code'?"),
    ("team-no-fallback", "[moe, math]", "[math]", 31,
     "routing.teams.acme.allowed_experts", "neither the fallback 'moe'", "add 'moe'"),
    ("version", "version: 1", "version: 2", 1, "version", "Input should be 1", None),
    ("override-empty", "      keywords: [select]\n", "", 20,
     "routing.overrides[0]", "no keywords and no regex", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new", "line", "path", "message", "suggestion"),
    [c[1:] for c in CATALOGUE],
    ids=[c[0] for c in CATALOGUE],
)
def test_broken_file_gives_exact_line_and_path(
    tmp_path: Path, old: str, new: str, line: int, path: str, message: str, suggestion: str | None
) -> None:
    assert old in GOOD
    f = tmp_path / "broken.yaml"
    f.write_text(GOOD.replace(old, new, 1))
    result = validate_file(f, AppConfig, cross_check=cross_check)
    assert not result.ok
    matching = [i for i in result.issues if i.path == path and message in i.message]
    assert matching, format_issues(result.issues)
    issue = matching[0]
    assert issue.severity == "error"
    assert (issue.file, issue.line) == (str(f), line), str(issue)
    assert issue.column is not None and issue.column >= 1
    if suggestion is None:
        assert issue.suggestion is None or "did you mean" not in issue.suggestion
    else:
        assert issue.suggestion is not None and suggestion in issue.suggestion
    text = format_issues(result.issues)
    assert f"{f}:{line}:{issue.column}: error: {path}: " in text


SYNTAX: list[tuple[str, str, int, int, str]] = [
    ("unclosed-flow", GOOD.replace("small, moe]", "small, moe"), 14, 21, "invalid YAML"),
    ("tab-indent", GOOD.replace("  fallback: moe", "\tfallback: moe"), 10, 1, "invalid YAML"),
    ("bad-mapping", GOOD.replace("kind: keywords", "kind: keywords: x"), 3, 17, "invalid YAML"),
    ("empty", "", 1, 1, "the document is empty"),
    ("comment-only", "# nothing here\n", 1, 1, "the document is empty"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "line", "column", "message"), [s[1:] for s in SYNTAX], ids=[s[0] for s in SYNTAX]
)
def test_syntax_errors_are_located_issues_not_tracebacks(
    text: str, line: int, column: int, message: str
) -> None:
    result = validate_text(text, AppConfig, file="p.yaml", cross_check=cross_check)
    assert not result.ok
    assert len(result.issues) == 1
    issue = result.issues[0]
    assert message in issue.message
    assert (issue.line, issue.column) == (line, column), str(issue)


def test_top_level_not_a_mapping() -> None:
    result = validate_text("- a\n- b\n", AppConfig, file="p.yaml")
    assert [(i.line, i.path) for i in result.issues] == [(1, "")]
    assert "valid dictionary" in result.issues[0].message


def test_multiple_documents_is_an_error() -> None:
    result = validate_text("a: 1\n---\nb: 2\n", AppConfig)
    assert not result.ok and "invalid YAML" in result.issues[0].message
    assert result.issues[0].line == 2


def test_all_errors_are_reported_at_once() -> None:
    text = GOOD.replace("fallback: moe", "fallback: mo").replace("percent: 5}", "percent: 500}")
    # schema errors stop before cross-checks (the model doesn't exist yet), so only the percent
    result = validate_text(text, AppConfig, cross_check=cross_check)
    assert [i.path for i in result.issues] == ["routing.shadow[0].percent"]
    text = GOOD.replace("fallback: moe", "fallback: mo").replace("[moe, math]", "[moe, mathh]")
    result = validate_text(text, AppConfig, cross_check=cross_check)
    assert {i.path for i in result.issues} == {
        "routing.fallback",
        "routing.teams.acme.allowed_experts[1]",
        "routing.teams.acme.allowed_experts",  # 'moe' is no longer the fallback: 'mo' is
    }


def test_warnings_do_not_block_loading() -> None:
    text = GOOD.replace("percent: 5}", "percent: 0}")
    result = validate_text(text, AppConfig, cross_check=cross_check)
    assert result.ok
    assert [(i.severity, i.path, i.line) for i in result.issues] == [
        ("warning", "routing.shadow[0].percent", 29)
    ]


def test_load_text_raises_policy_invalid_with_issues() -> None:
    with pytest.raises(PolicyInvalid) as info:
        load_text(GOOD.replace("fallback: moe", "fallback: mo"), AppConfig, cross_check=cross_check)
    err = info.value
    assert err.status_code == 422 and err.code == "invalid_policy"
    assert err.issues[0].path == "routing.fallback"
    assert "did you mean 'moe'?" in err.message


def test_unreadable_file_is_an_issue(tmp_path: Path) -> None:
    result = validate_file(tmp_path / "missing.yaml", AppConfig)
    assert not result.ok and "cannot read" in result.issues[0].message


def test_anchors_and_merge_keys_still_locate(tmp_path: Path) -> None:
    text = GOOD.replace("  moe: {backend: fake}", "  moe: &fake {backend: fake}").replace(
        "  math: {backend: fake}", "  math:\n    <<: *fake\n    slo_p95_ms: -1"
    )
    result = validate_text(text, AppConfig, cross_check=cross_check)
    assert [(i.path, i.line) for i in result.issues] == [("experts.math.slo_p95_ms", 10)]


def test_routing_policy_alone_is_loadable() -> None:
    policy = load_text("fallback: moe\nroutes: [{domain: code, experts: [a]}]\n", RoutingPolicy)
    assert policy.route_for("code") is not None


def test_union_member_errors_are_not_reported_twice() -> None:
    class WithUnion(_Strict):
        x: int | list[int]

    result = validate_text("x: [1, oops]\n", WithUnion)
    assert [(i.path, i.line) for i in result.issues] == [("x[1]", 1)]
    result = validate_text("x: oops\n", WithUnion)
    assert {i.path for i in result.issues} == {"x"}


def test_json_schema_export_is_json_and_strict() -> None:
    schema = json_schema(AppConfig, title="slm-router policy")
    assert schema["title"] == "slm-router policy"
    assert schema["$schema"].endswith("2020-12/schema")
    text = json.dumps(schema)
    assert "RoutingPolicy" in schema["$defs"]
    routing = schema["$defs"]["RoutingPolicy"]
    assert routing["additionalProperties"] is False
    assert "fallback" in routing["required"]
    assert json.loads(text) == schema
    plain: dict[str, Any] = json_schema(RoutingPolicy)
    assert plain["title"] == "RoutingPolicy"


def test_union_of_models_reports_only_the_branch_written() -> None:
    class A(_Strict):
        a: int

    class B(_Strict):
        b: list[int]

    class Doc(_Strict):
        x: A | list[A]
        y: B | int

    text = "x:\n  a: nope\ny:\n  b: [1, two]\n"
    result = validate_text(text, Doc)
    assert [(i.path, i.line) for i in result.issues] == [("x.a", 2), ("y.b[1]", 4)]
    result = validate_text("x:\n  - a: 1\n  - a: bad\ny: 3\n", Doc)
    assert [(i.path, i.line) for i in result.issues] == [("x[1].a", 3)]


def test_missing_keys_that_look_like_type_names_are_kept() -> None:
    class Doc(_Strict):
        strategy: str
        interval: int

    result = validate_text("other: 1\n", Doc)
    assert {i.path for i in result.issues} == {"strategy", "interval", "other"}
