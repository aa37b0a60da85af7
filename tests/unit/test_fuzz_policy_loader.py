"""Fuzzing the policy loader (router.config.validate_policy_text): whatever text ops feed
it, it returns either a config or located issues; it never raises.

Inputs: arbitrary text, arbitrary YAML documents built from the policy's own vocabulary, and
mutations of the shipped policies (lines dropped, duplicated, re-indented, characters swapped),
which is what a hand edit gone wrong looks like.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.config import (
    AppConfig,
    load_policy,
    parse_policy,
    validate_policy_text,
)
from router.errors import PolicyLoadError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [
    ROOT / "tests" / "policies" / "fake.yaml",
    ROOT / "policies" / "default.yaml",
    *sorted((ROOT / "policies" / "examples").glob("*.yaml")),
]
TEXTS = [p.read_text() for p in SHIPPED]
FILE = "fuzzed.yaml"
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)
# "fuzzed.yaml: error: ..." or "fuzzed.yaml:3:7: warning: ..."
ISSUE_LINE = re.compile(r"^fuzzed\.yaml(:(\d+)(:(\d+))?)?: (error|warning): .+", re.S)


def check_result(text: str) -> Any:
    """The loader's contract, for any text."""
    result = validate_policy_text(text, FILE)
    lines = text.count("\n") + 2  # a problem at the end of the document may point past it
    for issue in result.issues:
        rendered = str(issue)
        match = ISSUE_LINE.match(rendered)
        assert match, rendered
        if issue.line is not None:
            assert 1 <= issue.line <= lines, rendered
        assert issue.message.strip(), rendered
    if result.value is None:
        assert any(i.severity == "error" for i in result.issues), "rejected without a reason"
    else:
        assert isinstance(result.value, AppConfig)
        assert not any(i.severity == "error" for i in result.issues)
    # parse_policy is the raising twin: a PolicyLoadError carrying the same lines, nothing else.
    try:
        parse_policy(text, FILE, base=ROOT)
    except PolicyLoadError as exc:
        assert result.value is None
        assert exc.issues == [str(i) for i in result.issues]
    else:
        assert result.value is not None
    return result


def test_shipped_policies_load() -> None:
    for text in TEXTS:
        assert check_result(text).value is not None


@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_text(text: str) -> None:
    check_result(text)


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decoded_leniently(raw: bytes) -> None:
    check_result(raw.decode("utf-8", "replace"))


WORDS = [
    "version", "experts", "routing", "classifier", "gateway", "fallback", "routes", "domain",
    "backend", "fake", "local", "remote", "model", "overrides", "keywords", "regex", "teams",
    "splits", "arms", "weight", "shadow", "percent", "replicas", "min", "max", "timeout_s",
    "kind", "examples", "name", "expert", "api_base", "price", "input_per_1m", "a", "b",
]  # fmt: skip
scalars = (
    st.sampled_from(WORDS)
    | st.integers(-5, 5)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.none()
    | st.text(max_size=12)
)
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(WORDS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=30,
)


@FUZZ
@given(documents)
def test_arbitrary_yaml_documents(doc: Any) -> None:
    check_result(yaml.safe_dump(doc, sort_keys=False))


@FUZZ
@given(
    st.sampled_from(range(len(TEXTS))),
    st.lists(
        st.tuples(
            st.sampled_from(["drop", "dup", "indent", "dedent", "char", "insert"]),
            st.integers(0, 10_000),
            st.text(min_size=1, max_size=8),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_shipped_policies(index: int, edits: list[tuple[str, int, str]]) -> None:
    lines = TEXTS[index].splitlines(keepends=True)
    for op, pos, junk in edits:
        if not lines:
            break
        i = pos % len(lines)
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "indent":
            lines[i] = "  " + lines[i]
        elif op == "dedent":
            lines[i] = lines[i].lstrip()
        elif op == "char" and lines[i].strip():
            j = pos % len(lines[i].rstrip("\n"))
            lines[i] = lines[i][:j] + junk[0] + lines[i][j + 1 :]
        else:
            lines.insert(i, junk + "\n")
    check_result("".join(lines))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\x00",
        "---\n---\n",
        "[unclosed",
        "!!python/object/apply:os.system ['true']",
        "version: !!binary aGVsbG8=\n",
        "a: &x [1]\nb: *y\n",
        "experts: {a: {backend: fake}}\nrouting: {fallback: a}\nexperts: {}\n",
        "version: 1\nexperts:\n  a: {backend: fake}\nrouting:\n  fallback: b\n",
        "\ufeffversion: 1\n",
        "version: 1\n" + "  " * 2000 + "x: 1\n",
        *("k: " + "[" * n + "]" * n + "\n" for n in (300, 900, 5000)),
        *("k: " + "{a: " * n + "1" + "}" * n + "\n" for n in (300, 5000)),
        "experts:\n" + "".join("  " * i + "  k:\n" for i in range(3000)),
    ],
)
def test_nasty_documents(text: str) -> None:
    result = check_result(text)
    assert result.value is None


@pytest.mark.parametrize(
    "where",
    [
        "experts: *l8\nrouting: {fallback: a}",
        "experts: {a: {backend: fake}}\nrouting: {fallback: a, routes: *l8}",
        "experts: {a: {backend: fake, description: *l8}}\nrouting: {fallback: a}",
        "experts: {a: {backend: fake}}\n"
        "routing: {fallback: a, routes: [{domain: d, experts: [a], examples: *l8}]}",
    ],
)
def test_alias_expansion_stays_bounded(where: str) -> None:
    # A "billion laughs" policy: safe_load shares the aliased lists, but anything walking every
    # path through them meets 9**9 = 387M leaves. The loader must answer in bounded time.
    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for n in range(1, 9):
        levels.append(f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]")
    t0 = time.monotonic()
    result = check_result("\n".join(levels) + "\nversion: 1\n" + where + "\n")
    assert time.monotonic() - t0 < 5
    assert result.value is None


def test_undecodable_file_is_an_issue_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"version: 1\nexperts: \xff\xfe\n")
    with pytest.raises(PolicyLoadError) as err:
        load_policy(path)
    assert str(path) in err.value.issues[0]
