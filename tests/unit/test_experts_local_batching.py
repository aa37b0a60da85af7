"""Continuous batching inside one LocalBackend, checked through the engine's step records."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from experts.base import GenerationParams, Message
from experts.local import LocalBackend
from tests.unit.test_experts_local import build_tiny_llama, make_backend

PROMPTS = [
    [Message("user", "hi")],
    [Message("user", "Natalia sold 48 clips in April and half as many in May. How many?")],
    [Message("system", "Be brief."), Message("user", "def add(a, b): return a + b")],
]


def greedy(n: int) -> GenerationParams:
    return GenerationParams(max_tokens=n, temperature=0.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-batching"))


async def solo(backend: LocalBackend, messages: list[Message], n: int) -> str:
    return (await backend.generate(messages, greedy(n))).text


async def test_concurrent_requests_share_forward_passes(model_dir: Path) -> None:
    b = make_backend(model_dir, batch_wait_ms=200, max_batch_size=8)
    await asyncio.gather(b.generate(PROMPTS[0], greedy(6)), b.generate(PROMPTS[1], greedy(6)))
    steps = list(b.engine.steps)
    assert [s.kind for s in steps].count("prefill") == 1
    assert steps[0].kind == "prefill" and len(steps[0].request_ids) == 2
    decodes = [s for s in steps if s.kind == "decode"]
    assert decodes and all(len(s.request_ids) == 2 for s in decodes)
    await b.aclose()


async def test_batched_greedy_equals_one_at_a_time(model_dir: Path) -> None:
    """Left padding and the spliced KV cache must not change any request's answer."""
    b = make_backend(model_dir, batch_wait_ms=200)
    alone = [await solo(b, p, 12) for p in PROMPTS]
    b.engine.steps.clear()
    together = await asyncio.gather(*(b.generate(p, greedy(12)) for p in PROMPTS))
    assert [c.text for c in together] == alone
    assert max(len(s.request_ids) for s in b.engine.steps) == 3
    await b.aclose()


async def test_new_request_joins_a_running_batch(model_dir: Path) -> None:
    b = make_backend(model_dir, batch_wait_ms=0)
    expected_late = await solo(b, PROMPTS[2], 8)
    b.engine.steps.clear()
    long_stream = b.stream(
        PROMPTS[1], GenerationParams(max_tokens=60, temperature=0.0, stop=("\x00",))
    )
    first = await anext(long_stream)
    late = await b.generate(PROMPTS[2], greedy(8))
    rest = [c async for c in long_stream]
    assert late.text == expected_late
    kinds = [(s.kind, len(s.request_ids)) for s in b.engine.steps]
    # The long request was alone, then the late one was prefilled and they decoded together.
    assert kinds[0] == ("prefill", 1)
    assert ("prefill", 1) in kinds[1:] and ("decode", 2) in kinds
    assert rest[-1].finish_reason is not None and first.text is not None
    await b.aclose()


async def test_max_batch_size_caps_each_pass(model_dir: Path) -> None:
    b = make_backend(model_dir, batch_wait_ms=50, max_batch_size=2)
    results = await asyncio.gather(*(b.generate(PROMPTS[i % 3], greedy(4)) for i in range(5)))
    assert all(r.finish_reason in ("stop", "length") for r in results)
    sizes = [len(s.request_ids) for s in b.engine.steps]
    assert max(sizes) == 2
    await b.aclose()


async def test_per_request_params_inside_one_batch(model_dir: Path) -> None:
    b = make_backend(model_dir, batch_wait_ms=200)
    free = await solo(b, PROMPTS[1], 20)
    stop = free[5:8]
    b.engine.steps.clear()
    short, stopped, sampled = await asyncio.gather(
        b.generate(PROMPTS[1], greedy(3)),
        b.generate(PROMPTS[1], GenerationParams(max_tokens=20, temperature=0.0, stop=(stop,))),
        b.generate(PROMPTS[1], GenerationParams(max_tokens=20, temperature=1.0, seed=3)),
    )
    assert (short.finish_reason, short.completion_tokens) == ("length", 3)
    assert stopped.text == free[: free.find(stop)] and stopped.finish_reason == "stop"
    assert sampled.text != free
    assert len(b.engine.steps[0].request_ids) == 3
    await b.aclose()


def test_top_p_keeps_only_the_nucleus() -> None:
    import torch

    from experts.sampling import SamplingConfig, sample_row

    logits = torch.tensor([0.0, 3.0, 1.0, 2.9])
    gen = torch.Generator().manual_seed(0)
    narrow = SamplingConfig(max_new_tokens=1, temperature=1.0, top_p=0.3)
    assert {int(sample_row(logits, narrow, gen)) for _ in range(50)} == {1}
    wide = SamplingConfig(max_new_tokens=1, temperature=1.0, top_p=0.9)
    assert {int(sample_row(logits, wide, gen)) for _ in range(200)} == {1, 3}
    greedy_cfg = SamplingConfig(max_new_tokens=1, temperature=0.0)
    assert int(sample_row(logits, greedy_cfg, gen)) == 1


async def test_health_follows_the_engine(model_dir: Path) -> None:
    b = make_backend(model_dir)
    assert await b.health()
    await b.aclose()
    assert not await b.health()


async def test_unknown_adapter_is_rejected_not_ignored(model_dir: Path) -> None:
    from experts.errors import InvalidGenerationRequest

    b = make_backend(model_dir)
    with pytest.raises(InvalidGenerationRequest, match="adapter"):
        await b.generate(PROMPTS[0], GenerationParams(max_tokens=4, adapter="missing"))
    assert not b.engine.steps  # rejected before reaching the model
    await b.aclose()


def lora_model(model_dir: Path, tmp_path: Path) -> Any:
    """The tiny Llama with two random (non-identity) LoRA adapters, 'a' and 'b', via peft."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    for name, seed in (("a", 1), ("b", 2)):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(str(model_dir))
        cfg = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        get_peft_model(base, cfg).save_pretrained(str(tmp_path / name))
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(model_dir)), str(tmp_path / "a"), adapter_name="a"
    )
    model.load_adapter(str(tmp_path / "b"), adapter_name="b")
    return model.eval()


async def test_lora_adapters_mix_in_one_batch(model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    model = lora_model(model_dir, tmp_path)
    b = LocalBackend(
        "lora", model, AutoTokenizer.from_pretrained(str(model_dir)), batch_wait_ms=200
    )

    def params(adapter: str | None) -> GenerationParams:
        return GenerationParams(max_tokens=10, temperature=0.0, adapter=adapter)

    alone = [(await b.generate(PROMPTS[1], params(a))).text for a in ("a", "b", None)]
    assert len(set(alone)) == 3  # the adapters really change the answer
    b.engine.steps.clear()
    mixed = await asyncio.gather(*(b.generate(PROMPTS[1], params(a)) for a in ("a", "b", None)))
    assert [m.text for m in mixed] == alone
    assert len(b.engine.steps[0].request_ids) == 3
    await b.aclose()
