"""Unique prompts for the overhead benchmark: no request of a run repeats an earlier one.

A gateway with an embedding cache (slm-router's classifier) answers a repeated prompt without
running its encoder; real traffic does not repeat, so the headline figures must not either. The
texts are CLINC150's validation utterances (../shared/data/clinc150/val.jsonl) when present, else
generated sentences; once every text has been used, each goes round again with a numbered tail,
so the string (and the cache key) is still new.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from loadtest.workload import WorkItem

CLINC_VAL = Path(__file__).resolve().parents[1].parent / "shared/data/clinc150/val.jsonl"

_VOCAB = """
    explain compare summarise translate list describe estimate plan write fix check find
    python invoice dosage mortgage recipe flight budget vaccine query regex portfolio tax
    symptom loan garden contract schedule battery sensor lease salary pension allergy route
    quickly briefly today tomorrow safely cheaply for my team in spanish with examples
"""
_WORDS = tuple(_VOCAB.split())


def clinc_texts(path: Path = CLINC_VAL) -> list[str]:
    """CLINC150 validation texts, in file order; empty when the file is absent."""
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as fh:
        return [str(json.loads(line)["text"]) for line in fh if line.strip()]


def generated_texts(n: int = 2000, seed: int = 11) -> list[str]:
    """Distinct short sentences from a fixed vocabulary (deterministic for a seed)."""
    rng, out, seen = random.Random(seed), list[str](), set[str]()
    while len(out) < n:
        text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 12)))
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


class PromptSource:
    """Hands out prompts that were never handed out before (by this source)."""

    def __init__(self, texts: list[str], name: str) -> None:
        if not texts:
            raise ValueError("no prompt texts")
        self._texts = list(dict.fromkeys(texts))  # distinct, order kept
        self.name = name
        self.used = 0

    @classmethod
    def default(cls, path: Path = CLINC_VAL) -> PromptSource:
        texts = clinc_texts(path)
        if texts:
            return cls(texts, "clinc150-val")
        return cls(generated_texts(), "generated")

    def take(self, n: int) -> list[WorkItem]:
        items = [self._item(self.used + i) for i in range(max(1, n))]
        self.used += len(items)
        return items

    def _item(self, i: int) -> WorkItem:
        text = self._texts[i % len(self._texts)]
        lap = i // len(self._texts)
        if lap:
            text = f"{text} (take {lap + 1})"
        return WorkItem(messages=({"role": "user", "content": text},))
