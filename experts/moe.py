"""Mixture-of-Experts metadata: total and active parameters per token, for /v1/models.

Works on any transformers MoE (Mixtral, Qwen2-MoE, OLMoE, ...) by naming convention: routed expert
weights live under `.experts.` (fused [E, ...] tensors in transformers 5, per-expert modules in
4.x); everything else (attention, embeddings, norms, routers, shared experts, dense layers) runs
for every token. A config is counted on the meta device, so no memory is allocated.
"""

from __future__ import annotations

from typing import Any

_EXPERT_COUNT_ATTRS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
_TOP_K_ATTRS = ("num_experts_per_tok", "moe_top_k", "top_k")


def _first_int(config: Any, names: tuple[str, ...]) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def moe_shape(config: Any) -> tuple[int, int] | None:
    """(routed experts, experts per token) of an MoE config, or None for a dense model."""
    text_config = getattr(config, "text_config", None) or config
    experts = _first_int(text_config, _EXPERT_COUNT_ATTRS)
    top_k = _first_int(text_config, _TOP_K_ATTRS)
    if experts is None or top_k is None or experts < 2:
        return None
    return experts, min(top_k, experts)


def is_moe(config: Any) -> bool:
    return moe_shape(config) is not None


def _meta_model(config: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def moe_param_counts(model_or_config: Any) -> tuple[int, int]:
    """(total parameters, parameters active per token). For a dense model both are the total.

    Active counts embeddings and the LM head too (the convention behind "Mixtral 8x7B: 12.9B
    active"); tied embeddings count once.
    """
    is_config = not hasattr(model_or_config, "named_parameters")
    model = _meta_model(model_or_config) if is_config else model_or_config
    shape = moe_shape(model.config)
    total = 0
    routed = 0
    for name, param in model.named_parameters():
        total += param.numel()
        if ".experts." in name or name.endswith(".experts"):
            routed += param.numel()
    if shape is None or routed == 0:
        return total, total
    experts, top_k = shape
    return total, total - routed + routed * top_k // experts


def moe_metadata(model_or_config: Any) -> dict[str, Any]:
    """What /v1/models reports for a local model: architecture, experts, top-k and param counts."""
    is_config = not hasattr(model_or_config, "named_parameters")
    model = _meta_model(model_or_config) if is_config else model_or_config
    total, active = moe_param_counts(model)
    shape = moe_shape(model.config)
    archs = getattr(model.config, "architectures", None) or [type(model).__name__]
    return {
        "architecture": archs[0],
        "moe": shape is not None,
        "num_experts": shape[0] if shape else None,
        "experts_per_token": shape[1] if shape else None,
        "total_params": total,
        "active_params_per_token": active,
    }
