"""Several LoRA adapters on one shared tiny base: per-request selection, mixed batches."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

sys.path.insert(0, str(Path(__file__).parent))
from test_experts_tune_tiny import arithmetic_rows, build_tiny_llama, write_jsonl  # noqa: E402

from experts.lora import (  # noqa: E402
    AdapterError,
    adapter_names,
    attach_adapters,
    mixed_batch_kwargs,
    read_adapter_metadata,
    use_adapter,
)
from experts.tune import TuneConfig, tune  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("lora")
    base = build_tiny_llama(root / "base")
    adapters = {}
    for name, seed, rows in (
        ("maths", 0, arithmetic_rows(24)),
        ("echo", 1, [{"prompt": f"say {i}", "response": f"{i} {i} {i}"} for i in range(24)]),
    ):
        data = write_jsonl(root / f"{name}.jsonl", rows)
        adapters[name] = root / name
        tune(
            TuneConfig(
                base=str(base),
                data=data,
                out=adapters[name],
                steps=6,
                holdout=4,
                lr=2e-2,
                warmup_steps=1,
                seed=seed,
                progress=False,
            )
        )
    return base, adapters


def _load(base: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base).eval()


def _logits(model, ids, **kw):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return model(input_ids=ids, **kw).logits


def test_adapters_differ_and_disabling_restores_the_base(setup) -> None:  # type: ignore[no-untyped-def]
    base, adapters = setup
    ids = torch.tensor([[5, 17, 42, 99, 3, 8]])
    plain = _logits(_load(base), ids)
    model = attach_adapters(_load(base), adapters)
    assert adapter_names(model) == ["echo", "maths"]
    with use_adapter(model, "maths"):
        maths = _logits(model, ids)
    with use_adapter(model, "echo"):
        echo = _logits(model, ids)
    with use_adapter(model, None):
        off = _logits(model, ids)
    assert not torch.allclose(maths, echo, atol=1e-4)
    assert not torch.allclose(maths, plain, atol=1e-4)
    torch.testing.assert_close(off, plain)
    assert read_adapter_metadata(adapters["maths"])["kind"] == "lora"


def test_mixed_batch_matches_one_adapter_at_a_time(setup) -> None:  # type: ignore[no-untyped-def]
    base, adapters = setup
    model = attach_adapters(_load(base), adapters)
    ids = torch.tensor([[5, 17, 42, 99], [7, 7, 1, 30], [2, 60, 61, 62]])
    names = ["maths", None, "echo"]
    mixed = _logits(model, ids, **mixed_batch_kwargs(model, names))
    for row, name in enumerate(names):
        with use_adapter(model, name):
            single = _logits(model, ids[row : row + 1])
        torch.testing.assert_close(mixed[row : row + 1], single, atol=1e-5, rtol=1e-5)


def test_unknown_adapter_and_bad_dirs_are_rejected(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, adapters = setup
    model = attach_adapters(_load(base), {"maths": adapters["maths"]})
    with pytest.raises(AdapterError), use_adapter(model, "nope"):
        pass
    with pytest.raises(AdapterError):
        mixed_batch_kwargs(model, ["nope"])
    with pytest.raises(AdapterError):
        attach_adapters(_load(base), {"x": tmp_path})
    assert mixed_batch_kwargs(_load(base), [None, None]) == {}
