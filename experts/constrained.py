"""Constrained decoding for local experts: JSON mode and JSON schemas through llguidance.

llguidance was chosen by measurement on SmolLM2-135M against xgrammar, lm-format-enforcer and
outlines-core (benchmarks/experts_constrained.py; numbers and reasons in docs/EXPERTS.md). Each
request gets its own matcher; the batching engine masks that row's logits before sampling and
advances the matcher with the sampled token, so constrained and free rows share one batch.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from experts.base import ResponseFormat
from experts.errors import ExpertError, InvalidGenerationRequest

_CACHE_SIZE = 64
# OpenAI's own formatting ({"a": 1, "b": 2}) and no free whitespace: small models otherwise
# fill a JSON value with whitespace until max_tokens (seen with a random tiny Llama and known
# from other constrained decoders).
JSON_OPTIONS: Any = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def available() -> bool:
    try:
        import llguidance  # noqa: F401
    except ImportError:
        return False
    return True


class Matcher:
    """One request's position in its grammar."""

    def __init__(self, tokenizer: Any, grammar: str) -> None:
        import llguidance
        import llguidance.torch

        self._matcher = llguidance.LLMatcher(tokenizer, grammar)
        self._bits = llguidance.torch.allocate_token_bitmask(1, tokenizer.vocab_size)
        self._torch = llguidance.torch

    def mask(self, logits: Any) -> None:
        """Set the logits of tokens the grammar forbids next to -inf (in place, one row)."""
        self._torch.fill_next_token_bitmask(self._matcher, self._bits, 0)
        apply_bitmask(logits, self._bits)

    def advance(self, token: int) -> None:
        if not self._matcher.consume_token(token) or self._matcher.is_error():
            raise ExpertError(f"constrained decoding failed: {self._matcher.get_error()}")


def apply_bitmask(logits: Any, bits: Any) -> None:
    """-inf where bit `i` of the packed int32 mask is 0 (in place). numpy's unpackbits instead of
    llguidance.torch's apply, which took ~20 ms per token for a 49k vocabulary on this shared
    CPU (and tens of seconds on first use)."""
    import numpy as np
    import torch

    unpacked = np.unpackbits(bits.numpy().view(np.uint8), bitorder="little")
    forbidden = np.ones(logits.shape[-1], dtype=bool)
    width = min(len(forbidden), len(unpacked))
    forbidden[:width] = unpacked[:width] == 0
    if logits.device.type == "cpu" and logits.dtype == torch.float32:
        logits.numpy()[forbidden] = -np.inf  # shares memory; no torch kernel launch
    else:
        logits.masked_fill_(torch.from_numpy(forbidden).to(logits.device), float("-inf"))


class Grammar:
    """A compiled grammar for one tokenizer; `matcher()` per request."""

    def __init__(self, tokenizer: Any, grammar: str) -> None:
        self._tokenizer = tokenizer
        self._grammar = grammar

    def matcher(self) -> Matcher:
        return Matcher(self._tokenizer, self._grammar)


class GrammarCompiler:
    """Grammars for one model's tokenizer, cached by response format (schemas repeat)."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self._hf = tokenizer
        self._vocab = vocab_size
        self._ll: Any = None
        self._cache: OrderedDict[str, Grammar] = OrderedDict()
        self._lock = threading.Lock()

    def for_format(self, fmt: ResponseFormat) -> Grammar | None:
        """The grammar for a response_format (None for plain text)."""
        if fmt.type == "text":
            return None
        schema: Any = {"type": "object"} if fmt.type == "json_object" else fmt.schema or {}
        return self._cached(f"json:{json.dumps(schema, sort_keys=True)}", lambda: _json(schema))

    def for_lark(self, lark: str) -> Grammar:
        """A grammar in llguidance's Lark dialect (e.g. a forced tool call)."""
        return self._cached(f"lark:{lark}", lambda: _lark(lark))

    def _cached(self, key: str, build: Callable[[], str]) -> Grammar:
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            grammar = Grammar(self._tokenizer(), build())
            self._cache[key] = grammar
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
            return grammar

    def _tokenizer(self) -> Any:
        if self._ll is None:  # ~1 s for a 49k vocabulary: once per model, on first use
            import llguidance.hf

            self._ll = llguidance.hf.from_tokenizer(self._hf, n_vocab=self._vocab)
        return self._ll


def _json(schema: Any) -> str:
    import llguidance

    return _validated(
        lambda: llguidance.LLMatcher.grammar_from_json_schema(
            json.dumps(schema), defaults=JSON_OPTIONS
        ),
        "response_format",
    )


def _lark(lark: str) -> str:
    import llguidance

    return _validated(lambda: llguidance.LLMatcher.grammar_from_lark(lark), "tools")


def _validated(build: Callable[[], Any], param: str) -> str:
    import llguidance

    try:
        grammar = build()
        failed, problems = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise InvalidGenerationRequest(
            f"{param}: schema is not usable: {exc}", param=param
        ) from exc
    if failed:
        raise InvalidGenerationRequest(
            f"{param}: schema is not usable: {'; '.join(problems)}", param=param
        )
    return str(grammar)
