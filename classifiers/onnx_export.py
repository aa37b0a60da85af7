"""Exporting a sentence encoder to ONNX (mean pooling and L2 norm inside the graph), int8.

Built once per encoder folder and cached under `$SLM_ROUTER_CACHE/onnx/<key>/` (default
`~/.cache/slm-router`); the key hashes the folder's config and weights, the quantisation and
the exporter's format, so a fine-tuned encoder gets its own file and a stale one is never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

# Bump when the exported graph changes (inputs, outputs, pooling), so caches rebuild.
FORMAT = "mean-l2-v1"
OPSET = 17
_BUILD_LOCK = threading.Lock()


def cache_root() -> Path:
    """`$SLM_ROUTER_CACHE`, else `$XDG_CACHE_HOME/slm-router`, else `~/.cache/slm-router`.

    The same rule as experts.gguf.cache_root: leaves may not import each other."""
    explicit = os.environ.get("SLM_ROUTER_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "slm-router"


def folder_key(model_dir: Path, quantize: bool) -> str:
    """Content hash of what the graph depends on: config, weights, quantisation, format."""
    digest = hashlib.sha256(json.dumps([FORMAT, OPSET, quantize]).encode())
    for name in ("config.json", "model.safetensors", "pytorch_model.bin"):
        path = model_dir / name
        if path.is_file():
            digest.update(name.encode())
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:20]


def onnx_path(model_dir: str | Path, *, quantize: bool = True) -> Path:
    """The cached graph for MODEL_DIR, exported (and quantised) on first use."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{model_dir} is not a local model folder: the onnx backend exports local folders only"
        )
    target = cache_root() / "onnx" / folder_key(model_dir, quantize) / "model.onnx"
    if target.is_file():
        return target
    with _BUILD_LOCK:
        if not target.is_file():
            _build(model_dir, target, quantize)
    return target


def _build(model_dir: Path, target: Path, quantize: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Another process may build the same key at once: each writes its own temp file and the
    # atomic rename makes the last one win with identical content.
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_fp32(model_dir, fp32)
        out = Path(tmp) / "out.onnx"
        if quantize:
            quantize_int8(fp32, out)
        else:
            fp32.rename(out)
        os.replace(out, target)
    (target.parent / "source.json").write_text(
        json.dumps({"model_dir": str(model_dir), "quantize": quantize, "format": FORMAT})
    )


class _Pooled:
    """encoder -> mean-pooled, unit-norm embedding: what SentenceEncoder returns."""

    @staticmethod
    def wrap(encoder: Any) -> Any:
        import torch

        class Pooled(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder = encoder

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                hidden = self.encoder(
                    input_ids=input_ids, attention_mask=attention_mask
                ).last_hidden_state
                m = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, dim=-1)

        return Pooled().eval()


def export_fp32(model_dir: Path, out: Path) -> None:
    import warnings

    import torch
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(model_dir, attn_implementation="eager")
    module = _Pooled.wrap(encoder.eval())
    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (ids, mask),
            str(out),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "attention_mask": {0: "batch", 1: "seq"},
                "embedding": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 (weights int8, activations quantised per call): the MatMuls dominate."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
