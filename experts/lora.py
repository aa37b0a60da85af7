"""Several LoRA adapters on one shared base model (peft), chosen per request.

Two ways to pick the adapter, both offered to the LocalBackend:

* Batch-safe (preferred): one forward/generate call serves a mixed batch. peft's LoRA layers take
  `adapter_names=[...]` (one entry per row; `BASE_ADAPTER` for the plain base) and route each row
  through its own adapter. `mixed_batch_kwargs(names)` builds that argument.
* `use_adapter(model, name)`: a context manager that activates one adapter (or disables all for
  None) for the calls made inside it. It changes model-wide state, so it holds a per-model lock:
  callers serialise, and a batch must then be grouped by adapter.

peft is imported inside functions only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from experts.base import Backend
from experts.spec import ExpertSpec

# peft's reserved name for "no adapter" in mixed batches.
BASE_ADAPTER = "__base__"
METADATA_FILE = "metadata.json"
_LOCK_ATTR = "_slm_router_adapter_lock"


class AdapterError(ValueError):
    """An adapter cannot be loaded or selected."""


def _check_adapter_dir(path: Path) -> None:
    if not (path / "adapter_config.json").is_file():
        raise AdapterError(f"{path} is not a LoRA adapter dir (no adapter_config.json)")


def read_adapter_metadata(path: str | Path) -> dict[str, Any]:
    """metadata.json written by `slm-router experts tune` ({} for adapters made elsewhere)."""
    file = Path(path) / METADATA_FILE
    if not file.is_file():
        return {}
    data: dict[str, Any] = json.loads(file.read_text())
    return data


def attach_adapters(model: Any, adapters: Mapping[str, str | Path]) -> Any:
    """Load every adapter onto `model` under its name; returns the PeftModel to serve.

    `model` may be a plain transformers model or a PeftModel that already holds adapters.
    The base weights are shared: each adapter adds only its low-rank matrices.
    """
    from peft import PeftModel

    if not adapters:
        raise AdapterError("no adapters given")
    for name in adapters:
        if name == BASE_ADAPTER or not name:
            raise AdapterError(f"invalid adapter name {name!r}")
    peft_model = model
    for name, raw in adapters.items():
        path = Path(raw)
        _check_adapter_dir(path)
        try:
            if isinstance(peft_model, PeftModel):
                peft_model.load_adapter(str(path), adapter_name=name)
            else:
                peft_model = PeftModel.from_pretrained(peft_model, str(path), adapter_name=name)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise AdapterError(f"adapter {name!r} at {path} does not fit the base: {exc}") from exc
    peft_model.eval()
    return peft_model


def adapter_names(model: Any) -> list[str]:
    """Names of the adapters loaded on a PeftModel (empty for a plain model)."""
    config = getattr(model, "peft_config", None)
    return sorted(config) if config else []


def _lock_for(model: Any) -> threading.RLock:
    lock = getattr(model, _LOCK_ATTR, None)
    if lock is None:
        lock = threading.RLock()
        # Races on first use are harmless only if the attribute is set once; setdefault on the
        # instance dict is atomic under the GIL.
        lock = model.__dict__.setdefault(_LOCK_ATTR, lock)
    return lock


@contextmanager
def use_adapter(model: Any, name: str | None) -> Iterator[Any]:
    """Run the calls inside with adapter `name` active, or with all adapters off for None.

    Holds a per-model lock for the duration (adapter choice is model-wide state in peft).
    """
    with _lock_for(model):
        if name is None:
            if adapter_names(model):
                with model.disable_adapter():
                    yield model
            else:
                yield model
            return
        if name not in adapter_names(model):
            raise AdapterError(f"unknown adapter {name!r}; loaded: {adapter_names(model)}")
        previous = model.active_adapter
        model.set_adapter(name)
        try:
            yield model
        finally:
            model.set_adapter(previous)


def mixed_batch_kwargs(model: Any, names: Sequence[str | None]) -> dict[str, Any]:
    """Keyword arguments for `model(...)` / `model.generate(...)` running row i with adapter
    `names[i]` (None: the base model). Empty for a model without adapters (all rows None)."""
    loaded = set(adapter_names(model))
    if not loaded:
        if any(n is not None for n in names):
            raise AdapterError("the model has no adapters loaded")
        return {}
    rows = []
    for name in names:
        if name is not None and name not in loaded:
            raise AdapterError(f"unknown adapter {name!r}; loaded: {sorted(loaded)}")
        rows.append(BASE_ADAPTER if name is None else name)
    return {"adapter_names": rows}


def build_lora_backend(name: str, spec: ExpertSpec, adapters: Mapping[str, str]) -> Backend:
    """One shared base with several adapters, each served as its own expert name.

    The adapter is chosen per request (GenerationParams.adapter = the expert's name); the batching
    engine runs rows with different adapters in one forward pass."""
    from experts.builtin import resolve
    from experts.local import LoadedModel, LocalBackend, load_model

    base = resolve(spec)
    loaded = load_model(base.model, gguf_file=base.gguf_file, dtype=base.dtype, device=base.device)
    model = attach_adapters(loaded.model, adapters)
    meta = {"adapters": {n: read_adapter_metadata(p) for n, p in adapters.items()}}
    shared = LoadedModel(model, loaded.tokenizer, loaded.source)
    return LocalBackend.from_loaded(name, shared, base, model_label=spec.model, metadata=meta)


def build_single_adapter(name: str, spec: ExpertSpec) -> Backend:
    """Registry factory for a `backend: local` expert that names one `adapter`."""
    if not spec.adapter:
        raise AdapterError(f"expert '{name}' has no adapter")
    return build_lora_backend(name, spec, {name: spec.adapter})
