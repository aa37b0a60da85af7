"""What turns texts into unit-norm sentence vectors: ONNX Runtime, torch or static embeddings.

Each backend takes a local encoder folder (MiniLM by default, or a fine-tuned one) and gives
`embed(texts) -> (n, dim) float32`, mean-pooled and L2-normalised, no padding beyond the
longest text in the batch. Measured costs and accuracy: docs/bench/classifiers.md.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Literal

import numpy as np

BackendName = Literal["onnx", "torch", "static"]
BACKENDS: tuple[str, ...] = ("onnx", "torch", "static")


class Backend(abc.ABC):
    dim: int

    @abc.abstractmethod
    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit rows; texts are non-empty, cleaned strings."""


def mean_pool(hidden: Any, mask: Any) -> Any:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def _fast_tokenizer(model_dir: str, max_length: int) -> Any:
    """The Rust tokenizer itself: transformers' wrapper adds ~0.1 ms per call on this CPU."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir).backend_tokenizer
    tok.enable_truncation(max_length)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # pads to the batch's longest only
    return tok


def _quantized_torch(model: Any) -> Any:
    """int8 Linear layers; torch deprecates this API, so fall back to fp32 once it is gone."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(
                model, {torch.nn.Linear}, dtype=torch.qint8
            )
    except (AttributeError, RuntimeError, NotImplementedError):
        return model


class TorchBackend(Backend):
    def __init__(self, model_dir: str, *, max_length: int, quantize: bool) -> None:
        from transformers import AutoModel, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModel.from_pretrained(model_dir).eval()
        self._model = _quantized_torch(model) if quantize else model
        self.max_length = max_length
        self.dim = int(model.config.hidden_size)

    def embed(self, texts: list[str]) -> np.ndarray:
        import torch

        batch = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
            pooled = mean_pool(hidden, batch["attention_mask"])
            return torch.nn.functional.normalize(pooled, dim=-1).float().numpy()


class OnnxBackend(Backend):
    """ONNX Runtime on the exported graph (int8 by default), one intra-op thread by default."""

    def __init__(
        self, model_dir: str, *, max_length: int, quantize: bool, threads: int | None
    ) -> None:
        import onnxruntime as ort

        from classifiers.onnx_export import onnx_path

        path = onnx_path(model_dir, quantize=quantize)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or 1
        opts.inter_op_num_threads = 1
        # Spinning worker threads steal the core other replicas need on a small shared box.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._tokenizer = _fast_tokenizer(model_dir, max_length)
        self.path = path
        self.dim = int(self._session.get_outputs()[0].shape[-1])

    def embed(self, texts: list[str]) -> np.ndarray:
        encs = self._tokenizer.encode_batch(texts)
        ids = np.asarray([e.ids for e in encs], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encs], dtype=np.int64)
        (out,) = self._session.run(None, {"input_ids": ids, "attention_mask": mask})
        return np.asarray(out, dtype=np.float32)


class StaticBackend(Backend):
    """model2vec static embeddings distilled locally from the encoder: a lookup and a mean."""

    def __init__(self, model_dir: str, *, max_length: int) -> None:
        from classifiers.static_distill import static_model

        self._model = static_model(model_dir)
        self.max_length = max_length
        self.dim = int(self._model.dim)

    def embed(self, texts: list[str]) -> np.ndarray:
        vecs = np.asarray(self._model.encode(texts, max_length=self.max_length), dtype=np.float32)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs / np.clip(norms, 1e-9, None)


def make_backend(
    name: str, model_dir: str, *, max_length: int, quantize: bool, threads: int | None
) -> Backend:
    if name == "onnx":
        if not Path(model_dir, "config.json").is_file():
            raise ValueError(f"backend 'onnx' needs a local encoder folder, got {model_dir!r}")
        return OnnxBackend(model_dir, max_length=max_length, quantize=quantize, threads=threads)
    if name == "torch":
        if threads:
            import torch

            # Process-wide; one thread avoids cross-core contention spikes on small shared CPUs.
            torch.set_num_threads(threads)
        return TorchBackend(model_dir, max_length=max_length, quantize=quantize)
    if name == "static":
        return StaticBackend(model_dir, max_length=max_length)
    raise ValueError(f"unknown encoder backend {name!r}; expected one of {BACKENDS}")
