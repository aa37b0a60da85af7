"""Token counting for `policy simulate`: the expert's own tokenizer where it loads cheaply, else
the documented chars/4 estimate; never an exception."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from experts.spec import ExpertSpec
from router.ops.tokens import TokenCounters, counter_for, estimate_tokens
from tests.unit.test_experts_tune_tiny import build_tokenizer

TEXTS = ["hello world", "def f(x):\n    return x ** 2  # squares", "ünïcödé ✓ 数学", ""]


def test_estimate_is_ceil_chars_over_four() -> None:
    for text in TEXTS:
        assert estimate_tokens(text) == max(1, math.ceil(len(text) / 4))


def test_local_folder_uses_its_tokenizer(tmp_path: Path) -> None:
    tok = build_tokenizer(tmp_path)
    fn, how = counter_for(ExpertSpec(backend="local", model=str(tmp_path)))
    assert how == f"tokenizer of {tmp_path}"
    counts = [fn(t) for t in TEXTS]
    assert counts == [max(1, len(tok(t, add_special_tokens=False)["input_ids"])) for t in TEXTS]
    assert counts != [estimate_tokens(t) for t in TEXTS]  # really the tokenizer, not the rule


def test_uncached_hub_model_and_fake_fall_back_to_the_estimate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for spec in (
        ExpertSpec(backend="local", model="no-such-org/no-such-model-xyz"),
        ExpertSpec(backend="fake"),
    ):
        fn, how = counter_for(spec)
        assert how.startswith("estimate")
        assert fn("abcdefghi") == 3


def test_remote_uses_litellm() -> None:
    pytest.importorskip("litellm")
    fn, how = counter_for(ExpertSpec(backend="remote", model="openai/gpt-4o-mini"))
    assert how.startswith("litellm.token_counter")
    long = "the quick brown fox jumps over the lazy dog " * 20
    assert 150 <= fn(long) <= 250  # ~9-10 tiktoken tokens per repetition


def test_counters_build_once_per_expert_and_honour_estimate_mode(tmp_path: Path) -> None:
    build_tokenizer(tmp_path)
    experts = {
        "a": ExpertSpec(backend="local", model=str(tmp_path)),
        "b": ExpertSpec(backend="fake"),
    }
    auto = TokenCounters(experts, "auto")
    auto.count("a", "hello")
    auto.count("b", "hello")
    auto.count("unknown", "hello")
    assert auto.methods == {
        "a": f"tokenizer of {tmp_path}",
        "b": "estimate: ceil(chars / 4)",
        "unknown": "estimate: ceil(chars / 4)",
    }
    forced = TokenCounters(experts, "estimate")
    assert forced.count("a", "abcdefgh") == 2
    assert forced.methods == {"a": "estimate: ceil(chars / 4)"}
