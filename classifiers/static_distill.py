"""Static embeddings distilled locally from a sentence encoder with model2vec (no hub).

model2vec runs the encoder once over its vocabulary, reduces the token vectors with PCA and
stores the table; a sentence is then the mean of its tokens' rows. Cached next to the ONNX
graphs, keyed by the encoder folder's content.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from classifiers.onnx_export import cache_root, folder_key

PCA_DIMS = 256
_LOCK = threading.Lock()


def static_path(model_dir: str | Path) -> Path:
    return cache_root() / "static" / folder_key(Path(model_dir), False)


def static_model(model_dir: str | Path) -> Any:
    from model2vec import StaticModel

    target = static_path(model_dir)
    with _LOCK:
        if not (target / "config.json").is_file():
            _distill(Path(model_dir), target)
    return StaticModel.from_pretrained(str(target))


def _distill(model_dir: Path, target: Path) -> None:
    from model2vec.distill import distill_from_model
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(model_dir)
    tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)  # a fast tokenizer for BERT folders
    static = distill_from_model(model, tokenizer, pca_dims=PCA_DIMS, device="cpu")
    target.mkdir(parents=True, exist_ok=True)
    static.save_pretrained(str(target))
