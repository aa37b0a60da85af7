"""Incremental detokenisation: token ids in, text pieces out, never half a character.

`tokenizers.decoders.DecodeStream` does it in Rust (identical pieces to the offset scheme below
on 300+ random and multibyte/emoji sequences of SmolLM2's vocabulary, ~5x less time per token:
docs/EXPERTS.md). The offset scheme (vLLM's) remains for tokenizers without a Rust backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# How many prompt tokens the detokeniser keeps as left context, so the first generated token
# decodes with the right leading space (SentencePiece/BPE merge context).
DETOK_CONTEXT = 5


class IncrementalDetokenizer:
    """`push(token_id) -> str`: the text that token completes ("" while a character is split)."""

    def __init__(self, tokenizer: Any, prompt_ids: Sequence[int]) -> None:
        context = [int(i) for i in prompt_ids[-DETOK_CONTEXT:]]
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._impl: _Stream | _Offsets = (
            _Stream(backend, context) if backend is not None else _Offsets(tokenizer, context)
        )

    def push(self, token_id: int) -> str:
        return self._impl.push(token_id)


class _Stream:
    def __init__(self, backend: Any, context: list[int]) -> None:
        from tokenizers.decoders import DecodeStream

        self._backend = backend
        self._stream = DecodeStream(ids=context, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        return self._stream.step(self._backend, token_id) or ""


class _Offsets:
    """vLLM's offset scheme over `tokenizer.decode`, for slow (Python) tokenizers."""

    def __init__(self, tokenizer: Any, context: list[int]) -> None:
        self._tok = tokenizer
        self._ids = context
        self._prefix = 0
        self._read = len(self._ids)

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        decode = self._tok.decode
        prefix_text = decode(self._ids[self._prefix : self._read], skip_special_tokens=True)
        full_text = decode(self._ids[self._prefix :], skip_special_tokens=True)
        # A trailing U+FFFD means the token ended mid-character: wait for the next one.
        if len(full_text) > len(prefix_text) and not full_text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return str(full_text[len(prefix_text) :])
        return ""
