"""Counting prompt tokens for `policy simulate`, per expert: the expert's own tokenizer where it
loads cheaply (local models), litellm's counter for remote ones, else an estimate."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from experts.spec import ExpertSpec

CHARS_PER_TOKEN = 4  # OpenAI's rule of thumb for English text

CountFn = Callable[[str], int]


def estimate_tokens(text: str) -> int:
    """ceil(characters / 4), at least 1: within about 10-20% of real BPE counts on English
    prose, worse on code and non-Latin scripts. Used where no tokenizer loads cheaply."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def _hf_tokenizer(path: str) -> CountFn:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)

    def count(text: str) -> int:
        return max(1, len(tok(text, add_special_tokens=False)["input_ids"]))

    return count


def _local_tokenizer_path(spec: ExpertSpec) -> str | None:
    """A folder whose tokenizer loads in about a second, or None. GGUF checkpoints count only
    once converted (experts.gguf caches the conversion): parsing the GGUF file itself for its
    tokenizer takes 15-40 s on a small CPU, more than most replays."""
    from experts.builtin import resolve

    try:
        resolved = resolve(spec)
    except Exception:  # builtin package missing: estimate instead
        return None
    if resolved.gguf_file:
        from experts.gguf import converted_dir, resolve_gguf

        try:
            folder = converted_dir(resolve_gguf(resolved.model, resolved.gguf_file))
        except Exception:  # a hub GGUF not in the cache (offline)
            return None
        # The conversion is published by an atomic rename: a folder there is complete.
        return str(folder) if folder.is_dir() else None
    return resolved.model  # a local folder, or a hub id found only if already cached


def _remote_counter(spec: ExpertSpec) -> CountFn:
    from experts.remote import import_litellm

    litellm = import_litellm()  # applies the offline cost-map setting before the first import
    model = spec.model

    def count(text: str) -> int:
        return max(1, int(litellm.token_counter(model=model, text=text)))

    return count


def counter_for(spec: ExpertSpec) -> tuple[CountFn, str]:
    """(count function, how it counts) for one expert; never raises."""
    try:
        if spec.backend == "remote":
            fn = _remote_counter(spec)
            fn("probe")
            return (
                fn,
                "litellm.token_counter (tiktoken; exact for OpenAI models, approximate for others)",
            )
        if spec.backend == "local":
            path = _local_tokenizer_path(spec)
            if path is not None:
                return _hf_tokenizer(path), f"tokenizer of {spec.model}"
    except Exception:  # offline, not cached, not installed: fall through to the estimate
        pass
    return estimate_tokens, "estimate: ceil(chars / 4)"


class TokenCounters:
    """Per-expert counters, built on first use (a replay touching two experts loads two)."""

    def __init__(self, experts: Mapping[str, ExpertSpec], mode: Literal["auto", "estimate"]):
        self._experts = experts
        self._mode = mode
        self._fns: dict[str, CountFn] = {}
        self.methods: dict[str, str] = {}

    def count(self, expert: str, text: str) -> int:
        fn = self._fns.get(expert)
        if fn is None:
            spec = self._experts.get(expert)
            if self._mode == "estimate" or spec is None:
                fn, how = estimate_tokens, "estimate: ceil(chars / 4)"
            else:
                fn, how = counter_for(spec)
            self._fns[expert], self.methods[expert] = fn, how
        return fn(text)
