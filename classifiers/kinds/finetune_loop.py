"""The fine-tuning loop behind the `finetuned` kind: AdamW, one-cycle schedule, per-epoch
checkpoints (a killed run resumes at the last finished epoch), tqdm progress."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

# Logits = SCALE * cosine-like score: a unit-norm feature needs a large scale to reach
# confident probabilities; 20 is the usual choice for normalised softmax heads.
SCALE = 20.0


class Trainer:
    def __init__(self, encoder_dir: str, n_classes: int, seed: int, params: dict[str, Any]) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        torch.manual_seed(seed)
        self.seed = seed
        self.epochs = int(params.get("epochs", 3))
        self.batch_size = int(params.get("batch_size", 32))
        self.max_length = int(params.get("max_length", 64))
        self.lr = float(params.get("lr", 1e-4))
        self.head_lr = float(params.get("head_lr", 1e-2))
        self.label_smoothing = float(params.get("label_smoothing", 0.1))
        self.tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
        self.encoder = AutoModel.from_pretrained(encoder_dir)
        if bool(params.get("freeze_embeddings", True)):
            self.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
        layers = self.encoder.encoder.layer
        train_layers = params.get("train_layers")
        # With only the top layers trained, the frozen bottom's output never changes: it is
        # computed once per text (forward only) and each step runs just the top layers.
        self.frozen = 0 if train_layers is None else max(len(layers) - int(train_layers), 0)
        if self.frozen:
            self.encoder.embeddings.requires_grad_(False)
            for layer in layers[: self.frozen]:
                layer.requires_grad_(False)
        self._bottom: list[Any] | None = None
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, n_classes)
        self.seconds_per_step: float | None = None

    def tokens(self, texts: list[str]) -> Any:
        return self.tokenizer(
            [t or " " for t in texts],
            padding=True,  # to the batch's longest, never to max_length
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )

    def features(self, texts: list[str], idx: list[int]) -> Any:
        """Mean-pooled, unit-norm: exactly what the serving backends compute."""
        import torch

        if self._bottom is None:
            batch = self.tokens([texts[i] for i in idx])
            hidden, mask = self.encoder(**batch).last_hidden_state, batch["attention_mask"]
        else:
            hidden, mask = self._top([self._bottom[i] for i in idx])
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def _cache_bottom(self, texts: list[str], progress: bool) -> None:
        """Each text's hidden states after the frozen layers, unpadded."""
        import torch
        from transformers.masking_utils import create_bidirectional_mask

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[Any] = [None] * len(texts)
        starts = range(0, len(order), 64)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="frozen layers", unit="batch")
        self.encoder.eval()
        with torch.inference_mode():
            for s in starts:
                idx = order[s : s + 64]
                batch = self.tokens([texts[i] for i in idx])
                hidden = self.encoder.embeddings(input_ids=batch["input_ids"])
                mask4 = create_bidirectional_mask(
                    config=self.encoder.config,
                    inputs_embeds=hidden,
                    attention_mask=batch["attention_mask"],
                )
                for layer in self.encoder.encoder.layer[: self.frozen]:
                    hidden = layer(hidden, mask4)
                for j, i in enumerate(idx):
                    n = int(batch["attention_mask"][j].sum())
                    out[i] = hidden[j, :n].clone()
        self._bottom = out

    def _top(self, states: list[Any]) -> tuple[Any, Any]:
        import torch
        from transformers.masking_utils import create_bidirectional_mask

        longest = max(len(x) for x in states)
        hidden = torch.zeros((len(states), longest, states[0].shape[-1]))
        mask = torch.zeros((len(states), longest), dtype=torch.long)
        for j, x in enumerate(states):
            hidden[j, : len(x)] = x
            mask[j, : len(x)] = 1
        mask4 = create_bidirectional_mask(
            config=self.encoder.config, inputs_embeds=hidden, attention_mask=mask
        )
        for layer in self.encoder.encoder.layer[self.frozen :]:
            hidden = layer(hidden, mask4)
        return hidden, mask

    def run(self, texts: list[str], y: list[int], *, checkpoint: Path, progress: bool) -> None:
        import torch

        trainable = [p for p in self.encoder.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(
            [
                {"params": trainable, "lr": self.lr},
                {"params": self.head.parameters(), "lr": self.head_lr},
            ],
            weight_decay=0.01,
        )
        per_epoch = (len(texts) + self.batch_size - 1) // self.batch_size
        steps = max(self.epochs * per_epoch, 1)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[self.lr, self.head_lr], total_steps=steps, pct_start=0.1,
            anneal_strategy="linear",
        )  # fmt: skip
        start_epoch = self._resume(checkpoint, opt, sched)
        if self.frozen and start_epoch < self.epochs:
            self._cache_bottom(texts, progress)
        target = torch.tensor(y)
        bar = _bar(progress, steps, start_epoch * per_epoch)
        timed: list[float] = []
        self.encoder.train()
        for epoch in range(start_epoch, self.epochs):
            # Each epoch's order depends only on (seed, epoch): a resumed run sees the same data.
            perm = np.random.default_rng([self.seed, epoch]).permutation(len(texts))
            for s in range(0, len(perm), self.batch_size):
                t0 = time.perf_counter()
                idx = perm[s : s + self.batch_size].tolist()
                logits = SCALE * self.head(self.features(texts, idx))
                loss = torch.nn.functional.cross_entropy(
                    logits, target[idx], label_smoothing=self.label_smoothing
                )
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                opt.step()
                sched.step()
                timed.append(time.perf_counter() - t0)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.3f}", s_step=f"{timed[-1]:.2f}")
            torch.save(
                {
                    "epoch": epoch + 1,
                    "encoder": self.encoder.state_dict(),
                    "head": self.head.state_dict(),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                },
                checkpoint,
            )
        if bar is not None:
            bar.close()
        self._bottom = None
        self.encoder.eval()
        if timed:
            self.seconds_per_step = float(np.median(timed))

    def _resume(self, checkpoint: Path, opt: Any, sched: Any) -> int:
        import torch

        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        if not checkpoint.is_file():
            return 0
        state = torch.load(checkpoint, weights_only=True)
        self.encoder.load_state_dict(state["encoder"])
        self.head.load_state_dict(state["head"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        return int(state["epoch"])

    def save_encoder(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    def head_arrays(self, scale: float) -> tuple[np.ndarray, np.ndarray]:
        w = self.head.weight.detach().cpu().numpy() * scale
        b = self.head.bias.detach().cpu().numpy() * scale
        return w.astype(np.float32), b.astype(np.float32)


def _bar(progress: bool, total: int, initial: int) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="fine-tuning", unit="step")
