"""An encoder (MiniLM by default) fine-tuned end to end with a linear head on mean-pooled output."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.encoder import mean_pool, resolve_encoder
from classifiers.text import clean_all

CONFIG_FILE = "finetuned.json"
HEAD_FILE = "head.safetensors"


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class FinetunedModel:
    def __init__(
        self, encoder: Any, tokenizer: Any, head: Any, classes: list[str], max_length: int
    ) -> None:
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.head = head
        self.classes = classes
        self.max_length = max_length
        self.batch_size = 64

    def logits(self, texts: list[str]) -> Any:
        batch = self.tokenizer(
            [t or " " for t in texts],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.encoder.device)
        hidden = self.encoder(**batch).last_hidden_state
        return self.head(mean_pool(hidden, batch["attention_mask"]))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        items = clean_all(texts)
        self.encoder.eval()
        out = np.zeros((len(items), len(self.classes)), dtype=np.float64)
        order = sorted(range(len(items)), key=lambda i: len(items[i]))
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                idx = order[s : s + self.batch_size]
                probs = torch.softmax(self.logits([items[i] for i in idx]).float(), dim=-1)
                out[idx] = probs.cpu().numpy()
        return out

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(directory / "encoder")
        self.tokenizer.save_pretrained(directory / "encoder")
        save_file(
            {k: v.contiguous().cpu() for k, v in self.head.state_dict().items()},
            directory / HEAD_FILE,
        )
        config = {"classes": self.classes, "max_length": self.max_length}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))


def fit(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    seed: int,
    params: dict[str, Any],
    progress: bool,
) -> FinetunedModel:
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(seed)
    name = resolve_encoder(params.get("encoder"))
    tokenizer = AutoTokenizer.from_pretrained(name)
    encoder = AutoModel.from_pretrained(name)
    classes = sorted(set(labels))
    head = torch.nn.Linear(encoder.config.hidden_size, len(classes))
    device = _device()
    encoder.to(device)
    head.to(device)
    model = FinetunedModel(encoder, tokenizer, head, classes, int(params.get("max_length", 64)))
    _train(
        model,
        clean_all(texts),
        [classes.index(lab) for lab in labels],
        seed=seed,
        params=params,
        progress=progress,
    )
    encoder.to("cpu")
    head.to("cpu")
    return model


def _train(
    model: FinetunedModel,
    texts: list[str],
    y: list[int],
    *,
    seed: int,
    params: dict[str, Any],
    progress: bool,
) -> None:
    import torch

    epochs = int(params.get("epochs", 4))
    batch_size = int(params.get("batch_size", 32))
    lr = float(params.get("lr", 1e-4))
    head_lr = float(params.get("head_lr", 1e-2))
    opt = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": lr},
            {"params": model.head.parameters(), "lr": head_lr},
        ],
        weight_decay=0.01,
    )
    steps = epochs * ((len(texts) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=[lr, head_lr],
        total_steps=max(steps, 1),
        pct_start=0.1,
        anneal_strategy="linear",
    )
    gen = np.random.default_rng(seed)
    target = torch.tensor(y, device=model.encoder.device)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="fine-tuning", unit="step")
    model.encoder.train()
    for _ in range(epochs):
        perm = gen.permutation(len(texts))
        for s in range(0, len(perm), batch_size):
            idx = perm[s : s + batch_size].tolist()
            loss = torch.nn.functional.cross_entropy(
                model.logits([texts[i] for i in idx]), target[idx], label_smoothing=0.1
            )
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.encoder.parameters(), 1.0)
            opt.step()
            sched.step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
    if bar is not None:
        bar.close()
    model.encoder.eval()


def load(directory: Path, meta: Any = None) -> FinetunedModel:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    config = json.loads((directory / CONFIG_FILE).read_text())
    encoder = AutoModel.from_pretrained(directory / "encoder")
    tokenizer = AutoTokenizer.from_pretrained(directory / "encoder")
    classes = list(config["classes"])
    head = torch.nn.Linear(encoder.config.hidden_size, len(classes))
    head.load_state_dict(load_file(directory / HEAD_FILE))
    encoder.eval()
    return FinetunedModel(encoder, tokenizer, head, classes, int(config["max_length"]))
