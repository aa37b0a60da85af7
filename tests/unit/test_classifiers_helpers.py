"""Shared builders for the classifier tests: synthetic data and a tiny random encoder."""

from __future__ import annotations

import inspect
import json
import random
from pathlib import Path
from typing import Any

WORDS = {
    "math": ["integral", "derivative", "equation", "algebra", "matrix", "prime", "solve", "proof"],
    "cooking": ["recipe", "bake", "oven", "flour", "simmer", "garlic", "sauce", "roast"],
    "travel": ["flight", "hotel", "passport", "airport", "luggage", "visa", "booking", "train"],
}
OOS_WORDS = ["weather", "song", "football", "joke", "poem", "movie", "dance", "guitar"]
FILLER = ["please", "help", "me", "with", "the", "a", "my", "how", "do", "i", "what", "is"]


def sentence(rng: random.Random, words: list[str]) -> str:
    picked = rng.sample(words, 3) + rng.sample(FILLER, 3)
    rng.shuffle(picked)
    return " ".join(picked)


def make_rows(n_per_label: int, seed: int, oos: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = [
        {"text": sentence(rng, words), "domain": label}
        for label, words in WORDS.items()
        for _ in range(n_per_label)
    ]
    rows += [{"text": sentence(rng, OOS_WORDS), "domain": "oos"} for _ in range(oos)]
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_escalation_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Prompts with 'hard' words make the weak model fail more often."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        hard = rng.random() < 0.4
        words = WORDS["math"] if hard else WORDS["cooking"]
        weak_ok = rng.random() < (0.2 if hard else 0.9)
        strong_ok = rng.random() < 0.9
        rows.append(
            {"text": sentence(rng, words), "weak_correct": weak_ok, "strong_correct": strong_ok}
        )
    return rows


def tiny_encoder(directory: Path) -> str:
    """A random BERT whose vocab covers the synthetic words: milliseconds to run.

    One layer, with position/type/special-token embeddings zeroed so that, as in a trained
    encoder, the words (not the shared positions) decide the pooled vector.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += sorted({w for ws in WORDS.values() for w in ws} | set(OOS_WORDS) | set(FILLER))
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:  # transformers 5
        tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    else:
        tok = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    model = BertModel(config)
    with torch.no_grad():
        model.embeddings.position_embeddings.weight.zero_()
        model.embeddings.token_type_embeddings.weight.zero_()
        model.embeddings.word_embeddings.weight[:5].zero_()
        model.embeddings.word_embeddings.weight[5:] *= 20
        for layer in model.encoder.layer:
            layer.attention.output.dense.weight.zero_()
            layer.output.dense.weight.zero_()
    model.save_pretrained(directory)
    return str(directory)
