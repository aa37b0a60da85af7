"""Tensor helpers of the continuous-batching engine: left padding, positions, and splicing or
slicing transformers' DynamicCache along the batch and sequence axes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def device_of(model: Any) -> Any:
    return next(model.parameters()).device


def pad_id(tokenizer: Any, eos_token_ids: Sequence[int]) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = next(iter(eos_token_ids), 0)
    return int(pad)


def positions(mask: Any) -> Any:
    # Left padding: each row's first real token is position 0.
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


def left_pad(t: Any, width: int) -> Any:
    import torch.nn.functional as F

    pad = width - t.shape[-1]
    return F.pad(t, (pad, 0)) if pad else t


def _layer_kv(cache: Any) -> list[tuple[Any, Any]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def concat_caches(a: Any, a_len: int, b: Any, b_len: int, width: int) -> Any:
    """Stack two caches along the batch, left-padding each to `width` positions."""
    import torch
    import torch.nn.functional as F
    from transformers import DynamicCache

    def pad(t: Any, length: int) -> Any:
        return F.pad(t, (0, 0, width - length, 0)) if width > length else t

    merged = [
        (torch.cat([pad(ka, a_len), pad(kb, b_len)]), torch.cat([pad(va, a_len), pad(vb, b_len)]))
        for (ka, va), (kb, vb) in zip(_layer_kv(a), _layer_kv(b), strict=True)
    ]
    return DynamicCache(ddp_cache_data=merged)


def slice_cache(cache: Any, start: int) -> Any:
    from transformers import DynamicCache

    return DynamicCache(
        ddp_cache_data=[(k[:, :, start:], v[:, :, start:]) for k, v in _layer_kv(cache)]
    )
