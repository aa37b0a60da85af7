"""The DecodeStream detokeniser gives exactly the pieces of the offset scheme it replaced, on
random multibyte / emoji text (as a model produces it: valid UTF-8) after a random prompt, for a
byte-level BPE built here and for SmolLM2's own tokenizer.

Sequences of random token ids that are not valid UTF-8 are not compared: there the offset scheme
leaks characters of the prompt context into the first piece (its prefix arithmetic counts
replacement characters), which DecodeStream does not."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from experts.detok import IncrementalDetokenizer, _Offsets
from tests.unit.test_experts_local import build_tokenizer

TEXTS = [
    "Hello 👋 world — naïve café 日本語 テスト 🎉🎉 ok",
    "def f(x):\n    return x**2  # 😀",
    "Ünïcödé ∑ ∫ ≈ 🇫🇷 flag, 👩‍👩‍👧 family",
]


def pieces_both(tok: Any, prompt: list[int], ids: list[int]) -> tuple[list[str], list[str]]:
    stream = IncrementalDetokenizer(tok, prompt)
    offsets = _Offsets(tok, [int(i) for i in prompt[-5:]])
    return [stream.push(i) for i in ids], [offsets.push(i) for i in ids]


ALPHABET = [*"abcdefghij klmnop,.;:!?\n", "é", "ü", "—", "日本語", "👋", "🎉", "🇫🇷", "∑", "  "]


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 30)))


def check(tok: Any, sequences: int, seed: int) -> None:
    # The offset scheme decodes through transformers, which may apply the BERT-era
    # "clean up tokenization spaces" rewrite (" ?" -> "?", set for SmolLM2's GGUF tokenizer by
    # some transformers versions); DecodeStream gives the model's text as it is. The pieces are
    # compared with the rewrite off, as LocalBackend's converted SmolLM2 folder has it.
    tok.clean_up_tokenization_spaces = False
    rng = random.Random(seed)
    encode = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    cases = [(encode("Say:"), encode(t)) for t in TEXTS]
    cases += [(encode(random_text(rng)), encode(random_text(rng))) for _ in range(sequences)]
    for prompt, ids in cases:
        new, old = pieces_both(tok, prompt, ids)
        assert new == old, (prompt, ids)
    for text in TEXTS:
        new, _ = pieces_both(tok, [], encode(text))
        assert "".join(new) == text
        assert all("\ufffd" not in p for p in new)


def test_same_pieces_on_a_byte_level_bpe(tmp_path: Path) -> None:
    tok = build_tokenizer(tmp_path)
    assert tok.backend_tokenizer is not None  # the DecodeStream path is the one under test
    check(tok, 300, seed=1)


def test_same_pieces_on_smollm2() -> None:
    from transformers import AutoTokenizer

    from experts.builtin import smollm2_gguf
    from experts.errors import ExpertUnavailable

    try:
        folder, name = smollm2_gguf()
    except ExpertUnavailable as exc:
        pytest.skip(str(exc))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    check(tok, 300, seed=2)
