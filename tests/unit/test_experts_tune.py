"""LoRA tuning on a tiny Llama built and saved in the test (real peft, real from_pretrained)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

sys.path.insert(0, str(Path(__file__).parent))
from test_experts_tune_tiny import arithmetic_rows, build_tiny_llama, write_jsonl  # noqa: E402

from experts.tune import (  # noqa: E402
    IGNORE_INDEX,
    TuneConfig,
    TuneDataError,
    encode_example,
    file_sha256,
    load_examples,
    split_holdout,
    tune,
)


def test_load_examples_accepts_the_three_formats(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            {"prompt": "p", "response": "r"},
            {"question": "q2", "answer": "#### 4"},
        ],
    )
    ex = load_examples(path)
    assert [e.response for e in ex] == ["a", "r", "#### 4"]
    assert ex[0].prompt == (("system", "s"), ("user", "q"))
    assert ex[2].prompt == (("user", "q2"),)


@pytest.mark.parametrize("row", [{"text": "x"}, {"messages": [{"role": "user", "content": "q"}]}])
def test_load_examples_rejects_bad_rows(tmp_path: Path, row: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(TuneDataError, match=r"d.jsonl:1"):
        load_examples(write_jsonl(tmp_path / "d.jsonl", [row]))


def test_holdout_is_the_tail() -> None:
    train, held = split_holdout(list(range(10)), 3)  # type: ignore[arg-type]
    assert train == list(range(7)) and held == [7, 8, 9]
    with pytest.raises(TuneDataError):
        split_holdout(list(range(3)), 3)  # type: ignore[arg-type]


def test_loss_is_masked_to_the_response(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    build_tiny_llama(tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    ex = load_examples(write_jsonl(tmp_path / "d.jsonl", arithmetic_rows(1)))[0]
    ids, labels = encode_example(tok, ex, max_len=512)
    supervised = [t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
    assert tok.decode(supervised) == ex.response + tok.eos_token
    prompt = tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab == IGNORE_INDEX])
    assert prompt.endswith("<|im_start|>assistant\n") and "What is 0 plus 0?" in prompt
    assert encode_example(tok, ex, max_len=3) == ([], [])  # response cut off entirely


def test_tune_lowers_heldout_loss_and_writes_metadata(tmp_path: Path) -> None:
    base = build_tiny_llama(tmp_path / "base")
    data = write_jsonl(tmp_path / "d.jsonl", arithmetic_rows(40))
    out = tmp_path / "adapter"
    result = tune(
        TuneConfig(
            base=str(base),
            data=data,
            out=out,
            steps=12,
            holdout=8,
            batch_size=4,
            lr=1e-2,
            warmup_steps=2,
            progress=False,
        )
    )
    assert result.after.loss < result.before.loss
    assert math.isclose(result.after.perplexity, math.exp(result.after.loss))
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["base"] == str(base) and meta["steps"] == 12
    assert meta["data"]["sha256"] == file_sha256(data)
    assert meta["data"]["train_examples"] == 32 and meta["data"]["holdout_examples"] == 8
    assert meta["metrics"]["holdout_after"]["loss"] == result.after.loss
    assert set(meta["versions"]) == {"torch", "transformers", "peft"}
    with pytest.raises(TuneDataError):  # never overwrites an adapter
        tune(TuneConfig(base=str(base), data=data, out=out, steps=1, holdout=8, progress=False))
