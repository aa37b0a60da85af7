"""Sparse upcycling and MoE parameter counts, on tiny models built from config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).parent))
from test_experts_tune_tiny import build_tiny_llama  # noqa: E402

from experts.moe import is_moe, moe_metadata, moe_param_counts, moe_shape  # noqa: E402
from experts.upcycle import (  # noqa: E402
    BaseModelError,
    read_upcycle_metadata,
    split_gguf,
    upcycle,
    upcycle_model,
)

_SMALL = dict(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    eos_token_id=0,
    bos_token_id=0,
    pad_token_id=0,
)


def _logits(model, ids):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_upcycled_model_computes_the_dense_function(noise: float) -> None:
    config = transformers.LlamaConfig(**_SMALL, tie_word_embeddings=True)
    torch.manual_seed(0)
    dense = transformers.LlamaForCausalLM(config).eval()
    moe = upcycle_model(dense, experts=4, top_k=2, router_noise_std=noise, seed=1)
    ids = torch.randint(0, 64, (2, 11))
    assert type(moe).__name__ == "MixtralForCausalLM"
    torch.testing.assert_close(_logits(moe, ids), _logits(dense, ids), atol=1e-5, rtol=1e-5)
    router = moe.model.layers[0].mlp.gate.weight
    assert (router.abs().sum() > 0) == (noise > 0)


def test_changing_one_expert_changes_the_output() -> None:
    # Guards against an upcycled model that silently bypasses its experts.
    torch.manual_seed(0)
    dense = transformers.LlamaForCausalLM(transformers.LlamaConfig(**_SMALL)).eval()
    moe = upcycle_model(dense, experts=2, top_k=2)
    ids = torch.randint(0, 64, (1, 7))
    with torch.no_grad():
        moe.model.layers[0].mlp.experts.down_proj[1].mul_(3.0)
    assert not torch.allclose(_logits(moe, ids), _logits(dense, ids), atol=1e-4)


def test_upcycle_writes_a_loadable_checkpoint_with_metadata(tmp_path: Path) -> None:
    base = build_tiny_llama(tmp_path / "dense")
    out = tmp_path / "moe"
    result = upcycle(str(base), out, experts=4, top_k=1, router_noise_std=0.01)
    dense = transformers.AutoModelForCausalLM.from_pretrained(base).eval()
    moe = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ids = tok("The answer is 72", return_tensors="pt")["input_ids"]
    torch.testing.assert_close(_logits(moe, ids), _logits(dense, ids), atol=1e-5, rtol=1e-5)
    meta = read_upcycle_metadata(out)
    assert meta is not None and meta["experts"] == 4 and meta["top_k"] == 1
    assert meta == json.loads(json.dumps(result.to_json()))
    # top-1: per token the dense model's parameters plus the routers (layers x experts x hidden).
    router_params = 2 * 4 * 32
    assert result.active_params_per_token == result.dense_params + router_params
    assert result.total_params > result.dense_params
    with pytest.raises(BaseModelError):
        upcycle(str(base), out)  # refuses to overwrite


def test_upcycle_rejects_bad_shapes(tmp_path: Path) -> None:
    dense = transformers.LlamaForCausalLM(transformers.LlamaConfig(**_SMALL))
    with pytest.raises(BaseModelError):
        upcycle_model(dense, experts=2, top_k=3)
    biased = transformers.LlamaForCausalLM(transformers.LlamaConfig(**_SMALL, mlp_bias=True))
    with pytest.raises(BaseModelError):
        upcycle_model(biased, experts=2, top_k=1)


def test_split_gguf_forms() -> None:
    assert split_gguf("org/model") is None
    assert split_gguf("/m/x.gguf") == (Path("/m"), "x.gguf")
    assert split_gguf("/m", "y.gguf") == (Path("/m"), "y.gguf")


def _mixtral(e: int, k: int):  # type: ignore[no-untyped-def]
    return transformers.MixtralConfig(**_SMALL, num_local_experts=e, num_experts_per_tok=k)


def _by_hand(config, expert_numel_per_layer: int, top_k: int, experts: int):  # type: ignore[no-untyped-def]
    model = transformers.AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    routed = expert_numel_per_layer * config.num_hidden_layers
    return total, total - routed + routed * top_k // experts


def test_param_counts_mixtral_from_config_and_model() -> None:
    config = _mixtral(4, 2)
    per_layer = 4 * 3 * 16 * 32  # experts x (gate, up, down) x hidden x intermediate
    expected = _by_hand(config, per_layer, 2, 4)
    assert moe_param_counts(config) == expected
    assert moe_param_counts(transformers.AutoModelForCausalLM.from_config(config)) == expected
    assert moe_shape(config) == (4, 2)


def test_param_counts_qwen2_moe_counts_shared_expert_as_active() -> None:
    config = transformers.Qwen2MoeConfig(
        **_SMALL,
        moe_intermediate_size=8,
        shared_expert_intermediate_size=24,
        num_experts=6,
        num_experts_per_tok=2,
    )
    per_layer = 6 * 3 * 16 * 8
    assert moe_param_counts(config) == _by_hand(config, per_layer, 2, 6)


def test_param_counts_olmoe() -> None:
    config = transformers.OlmoeConfig(**_SMALL, num_experts=8, num_experts_per_tok=2)
    per_layer = 8 * 3 * 16 * 32
    total, active = moe_param_counts(config)
    assert (total, active) == _by_hand(config, per_layer, 2, 8)
    assert moe_metadata(config)["active_params_per_token"] == active


def test_dense_model_reports_total_as_active() -> None:
    config = transformers.LlamaConfig(**_SMALL)
    total, active = moe_param_counts(config)
    assert total == active
    assert not is_moe(config)
    assert moe_metadata(config)["moe"] is False


def test_cli_upcycle_and_tune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from experts.cli import add_subcommands

    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="cmd", required=True))
    base = build_tiny_llama(tmp_path / "dense")
    args = parser.parse_args(
        [
            "upcycle",
            "--base",
            str(base),
            "--experts",
            "3",
            "--top-k",
            "2",
            "--out",
            str(tmp_path / "m"),
        ]
    )
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["experts"] == 3 and (tmp_path / "m" / "config.json").is_file()
    args = parser.parse_args(["upcycle", "--base", str(base), "--out", str(tmp_path / "m")])
    assert args.func(args) == 2  # exists: refused with a message, not a traceback
    assert "not empty" in capsys.readouterr().err
    bad = parser.parse_args(
        [
            "tune",
            "--base",
            str(base),
            "--data",
            str(tmp_path / "none.jsonl"),
            "--out",
            str(tmp_path / "a"),
        ]
    )
    assert bad.func(bad) == 2
