"""An encoder (MiniLM by default) fine-tuned end to end with a linear head on its sentence vector.

The head reads the same mean-pooled, unit-norm vector the encoder backends return, so after
training the encoder is saved as a plain folder and served like any other: ONNX Runtime int8 by
default (classifiers.backends), the head a matrix product in numpy.

CPU cost (docs/bench/classifiers.md): torch's intra-op pool on more threads than free cores
spins at every op barrier (measured 9.5 s/step with 2 threads vs 1.8 s with 1 under load 6 on
2 cores), so training runs on `threads` (1) threads; batches pad to their longest text, not to
max_length (2.2x less compute on CLINC150); the word-embedding table (half of MiniLM's weights)
stays frozen, which saves a third of the step and keeps rare words' vectors as pre-trained.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.encoder import DEFAULT_BACKEND, SentenceEncoder, resolve_encoder, shared_encoder
from classifiers.kinds.embedding import probs_from_head
from classifiers.onnx_export import cache_root
from classifiers.text import clean_all, sha256_json

CONFIG_FILE = "finetuned.json"
HEAD_FILE = "head.npz"
ENCODER_DIR = "encoder"
CHECKPOINT = "checkpoint.pt"


class FinetunedModel:
    def __init__(
        self,
        encoder: SentenceEncoder,
        encoder_dir: Path,
        classes: list[str],
        coef: np.ndarray,
        intercept: np.ndarray,
    ) -> None:
        self.encoder = encoder
        self.encoder_dir = encoder_dir
        self.classes = classes
        self.coef = coef.astype(np.float32)
        self.intercept = intercept.astype(np.float32)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return probs_from_head(self.encoder.encode(texts), self.coef, self.intercept)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if self.encoder_dir.resolve() != (directory / ENCODER_DIR).resolve():
            shutil.copytree(self.encoder_dir, directory / ENCODER_DIR, dirs_exist_ok=True)
        np.savez(directory / HEAD_FILE, coef=self.coef, intercept=self.intercept)
        config = {
            "classes": self.classes,
            "max_length": self.encoder.max_length,
            "backend": self.encoder.backend,
            "quantize": self.encoder.quantize,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))


def _serving_encoder(encoder_dir: Path, params: dict[str, Any]) -> SentenceEncoder:
    return shared_encoder(
        str(encoder_dir),
        max_length=int(params.get("max_length", 64)),
        backend=str(params.get("backend", DEFAULT_BACKEND)),
        quantize=bool(params.get("quantize", True)),
    )


def work_dir(
    texts: Sequence[str], labels: Sequence[str], seed: int, params: dict[str, Any]
) -> Path:
    """Where checkpoints go: keyed by the run's identity, so rerunning the same command after
    a kill resumes at the last finished epoch."""
    if params.get("checkpoint_dir"):
        return Path(params["checkpoint_dir"])
    key = sha256_json(
        [list(texts), list(labels), seed, params, resolve_encoder(params.get("encoder"))]
    )
    return cache_root() / "finetune" / key[:20]


def fit(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    seed: int,
    params: dict[str, Any],
    progress: bool,
) -> FinetunedModel:
    import torch

    from classifiers.kinds.finetune_loop import SCALE, Trainer

    classes = sorted(set(labels))
    work = work_dir(texts, labels, seed, params)
    threads = torch.get_num_threads()
    torch.set_num_threads(int(params.get("threads", 1)))
    try:
        trainer = Trainer(resolve_encoder(params.get("encoder")), len(classes), seed, params)
        trainer.run(
            clean_all(texts),
            [classes.index(lab) for lab in labels],
            checkpoint=work / CHECKPOINT,
            progress=progress,
        )
        trainer.save_encoder(work / ENCODER_DIR)
        coef, intercept = trainer.head_arrays(SCALE)
        (work / CHECKPOINT).unlink(missing_ok=True)  # ~250 MB of optimizer state
    finally:
        torch.set_num_threads(threads)
    encoder = _serving_encoder(work / ENCODER_DIR, params)
    return FinetunedModel(encoder, work / ENCODER_DIR, classes, coef, intercept)


def load(directory: Path, meta: Any = None) -> FinetunedModel:
    config = json.loads((directory / CONFIG_FILE).read_text())
    if not (directory / HEAD_FILE).is_file():
        raise ValueError(
            f"{directory} is a finetuned artifact from before the encoder backends "
            f"(no {HEAD_FILE}): retrain it with `slm-router classifier train --kind finetuned`"
        )
    head = np.load(directory / HEAD_FILE)
    encoder = _serving_encoder(directory / ENCODER_DIR, config)
    return FinetunedModel(
        encoder, directory / ENCODER_DIR, list(config["classes"]), head["coef"], head["intercept"]
    )
