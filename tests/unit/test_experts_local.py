"""LocalBackend through the real from_pretrained path on a tiny random Llama built per module."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from experts.base import GenerationParams, Message
from experts.chat import FALLBACK_CHAT_TEMPLATE
from experts.errors import ContextWindowExceeded, InvalidGenerationRequest
from experts.local import LocalBackend
from experts.spec import ExpertSpec

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b): return a + b",
    "Natalia sold 48 clips in April and half as many in May.",
    "Paris is the capital of France; bonjour means hello.",
    "Interest compounds monthly at five percent per year.",
]
USER = [Message("user", "How many clips did Natalia sell?")]
GREEDY = GenerationParams(max_tokens=12, temperature=0.0)


def build_tokenizer(out: Path) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    fast.save_pretrained(str(out))
    return fast


def build_tiny_llama(out: Path) -> Path:
    """A random 2-layer Llama and a BPE tokenizer with no chat template, saved to `out`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(out)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def make_backend(model_dir: Path, **spec: Any) -> LocalBackend:
    fields: dict[str, Any] = {"backend": "local", "model": str(model_dir), "device": "cpu"}
    fields.update(spec)
    return LocalBackend.from_spec("tiny", ExpertSpec(**fields))


@pytest.fixture
async def backend(model_dir: Path) -> Any:
    b = make_backend(model_dir, batch_wait_ms=0)
    yield b
    await b.aclose()


async def solo_greedy(model_dir: Path, messages: list[Message], max_tokens: int) -> str:
    """Reference: Hugging Face's own generate() on the same folder, one request alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    prompt = tok.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages],
        chat_template=FALLBACK_CHAT_TEMPLATE,
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False)
    return str(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


async def test_greedy_matches_transformers_generate(backend: LocalBackend, model_dir: Path) -> None:
    got = await backend.generate(USER, GREEDY)
    expected = await solo_greedy(model_dir, USER, GREEDY.max_tokens)
    assert got.text == expected.split("<|im_end|>")[0]
    assert got.prompt_tokens == backend.count_prompt_tokens(USER)
    assert 1 <= got.completion_tokens <= GREEDY.max_tokens


async def test_stream_concatenates_to_generate(backend: LocalBackend) -> None:
    chunks = [c async for c in backend.stream(USER, GREEDY)]
    whole = await backend.generate(USER, GREEDY)
    assert "".join(c.text for c in chunks) == whole.text
    assert all(c.finish_reason is None for c in chunks[:-1])
    last = chunks[-1]
    assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == (
        whole.finish_reason,
        whole.prompt_tokens,
        whole.completion_tokens,
    )
    assert len(chunks) > 2  # token by token, not one blob


async def test_max_tokens_ends_with_length(backend: LocalBackend) -> None:
    got = await backend.generate(USER, GenerationParams(max_tokens=5, temperature=0.0))
    assert (got.finish_reason, got.completion_tokens) == ("length", 5)


async def test_stop_sequence_trims_and_ends(backend: LocalBackend) -> None:
    free = await backend.generate(USER, GenerationParams(max_tokens=24, temperature=0.0))
    stop = free.text[4:7]
    assert len(stop) == 3, free.text
    stopped = await backend.generate(
        USER, GenerationParams(max_tokens=24, temperature=0.0, stop=(stop,))
    )
    assert stopped.text == free.text[: free.text.find(stop)]
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens < free.completion_tokens


async def test_seed_makes_sampling_reproducible(backend: LocalBackend) -> None:
    def params(seed: int) -> GenerationParams:
        return GenerationParams(max_tokens=16, temperature=1.0, top_p=0.95, seed=seed)

    a, b, c = await asyncio.gather(
        backend.generate(USER, params(7)),
        backend.generate(USER, params(7)),
        backend.generate(USER, params(8)),
    )
    assert a.text == b.text
    assert a.text != c.text


async def test_prompt_longer_than_context_window_is_rejected(model_dir: Path) -> None:
    b = make_backend(model_dir, context_window=64)
    long = [Message("user", " ".join(CORPUS))]
    assert b.count_prompt_tokens(long) > 64
    with pytest.raises(ContextWindowExceeded) as err:
        await b.generate(long, GREEDY)
    assert err.value.status_code == 400
    # A prompt that fits gets its answer cut at the window instead.
    short = [Message("user", "hi")]
    room = 64 - b.count_prompt_tokens(short)
    got = await b.generate(short, GenerationParams(max_tokens=100, temperature=0.0))
    assert got.completion_tokens <= room
    await b.aclose()


async def test_context_window_from_config(backend: LocalBackend) -> None:
    assert backend.context_window == 256
    assert backend.info().backend == "local"


async def test_chat_template_fallback_is_chatml(backend: LocalBackend) -> None:
    msgs = [Message("system", "Be brief."), Message("user", "hi")]
    chatml = (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert backend.count_prompt_tokens(msgs) == len(
        backend.tokenizer(chatml, add_special_tokens=False)["input_ids"]
    )
    assert backend.info().metadata["chat_template"] == "chatml-fallback"


async def test_model_chat_template_is_used_when_present(model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    b = make_backend(model_dir)
    b.tokenizer = tok
    assert b.count_prompt_tokens([Message("user", "hi")]) == len(tok("[user] hi\n")["input_ids"])
    await b.aclose()


async def test_empty_messages_are_invalid(backend: LocalBackend) -> None:
    with pytest.raises(InvalidGenerationRequest):
        await backend.generate([], GREEDY)


async def test_multibyte_text_survives_token_by_token_decoding(backend: LocalBackend) -> None:
    from experts.detok import IncrementalDetokenizer

    text = "héllo 日本語 — ok"
    ids = backend.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text) // 2  # unseen characters really are split into byte tokens
    detok = IncrementalDetokenizer(backend.tokenizer, [])
    pieces = [detok.push(i) for i in ids]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


async def test_abandoned_stream_frees_its_batch_slot(backend: LocalBackend) -> None:
    stream = backend.stream(USER, GenerationParams(max_tokens=200, temperature=0.0))
    async for _ in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    for _ in range(100):
        if backend.engine.active == 0:
            break
        await asyncio.sleep(0.02)
    assert backend.engine.active == 0


def test_registry_builds_by_kind_and_accepts_extensions() -> None:
    from experts.base import Backend
    from experts.errors import ExpertUnavailable
    from experts.fake import FakeBackend
    from experts.registry import _registered, backend_kind, build_backend, register_backend

    fake = build_backend("f1", ExpertSpec(backend="fake", reply="x"))
    assert isinstance(fake, FakeBackend) and fake.name == "f1"
    lora_spec = ExpertSpec(backend="local", model="base", adapter="/adapters/math")
    assert backend_kind(lora_spec) == "lora"
    with pytest.raises(ExpertUnavailable):
        build_backend("f2", ExpertSpec(backend="local", model="/no/such/model"))
    saved = _registered.pop("lora", None)
    built: list[str] = []

    def lora_factory(name: str, spec: ExpertSpec) -> Backend:
        built.append(f"{name}:{spec.adapter}")
        return FakeBackend(name)

    register_backend("lora", lora_factory)
    try:
        assert isinstance(build_backend("math", lora_spec), FakeBackend)
        assert built == ["math:/adapters/math"]
    finally:
        _registered.pop("lora", None)
        if saved is not None:
            _registered["lora"] = saved


def test_gguf_publish_is_atomic_and_first_writer_wins(tmp_path: Path) -> None:
    from experts.gguf import _DONE_MARKER, _publish

    target = tmp_path / "models" / "abc"
    target.parent.mkdir()
    first, second = tmp_path / "t1", tmp_path / "t2"
    for folder, tag in ((first, "one"), (second, "two")):
        folder.mkdir()
        (folder / _DONE_MARKER).write_text(tag)
    _publish(first, target)
    _publish(second, target)  # a concurrent converter lost the race: its copy is not used
    assert (target / _DONE_MARKER).read_text() == "one"
    assert not first.exists()
