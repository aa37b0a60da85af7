"""LoRA fine-tuning of a small causal LM on chat or prompt/response JSONL (peft).

Each JSONL row is one of:
  {"messages": [{"role": ..., "content": ...}, ...]}   the last assistant turn is the response
  {"prompt": ..., "response": ...}
  {"question": ..., "answer": ...}                       (GSM8K)
The prompt is rendered with the tokenizer's chat template exactly as the LocalBackend renders a
request (add_generation_prompt=True), and the loss covers only the response tokens plus EOS.
The last `holdout` rows are never trained on; loss and perplexity on them are measured before and
after training.

Heavy libraries are imported inside functions only.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from experts.files import file_sha256

METADATA_FILE = "metadata.json"
METADATA_VERSION = 1
IGNORE_INDEX = -100


class TuneDataError(ValueError):
    """The training data is missing or malformed."""


@dataclass(frozen=True)
class Example:
    prompt: tuple[tuple[str, str], ...]  # (role, content) turns before the response
    response: str


@dataclass(frozen=True)
class TuneConfig:
    base: str
    data: Path
    out: Path
    steps: int = 100
    holdout: int = 50
    max_train_examples: int | None = None
    batch_size: int = 4
    lr: float = 2e-4
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"
    max_len: int = 384
    warmup_steps: int = 10
    seed: int = 0
    gguf_file: str | None = None
    cache_dir: Path | None = None
    progress: bool = True


@dataclass(frozen=True)
class LossMetrics:
    loss: float
    perplexity: float
    tokens: int


@dataclass(frozen=True)
class TuneResult:
    out: Path
    before: LossMetrics
    after: LossMetrics
    train_examples: int
    holdout_examples: int
    train_seconds: float
    metadata: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ data


def _example_from_row(row: dict[str, Any], where: str) -> Example:
    if "messages" in row:
        turns = [(str(m["role"]), str(m["content"])) for m in row["messages"]]
        last = max((i for i, (role, _) in enumerate(turns) if role == "assistant"), default=None)
        if last is None or last == 0:
            raise TuneDataError(f"{where}: chat row needs an assistant turn after a prompt")
        return Example(prompt=tuple(turns[:last]), response=turns[last][1])
    for prompt_key, response_key in (("prompt", "response"), ("question", "answer")):
        if prompt_key in row and response_key in row:
            return Example(
                prompt=(("user", str(row[prompt_key])),), response=str(row[response_key])
            )
    raise TuneDataError(f"{where}: expected messages, prompt/response or question/answer")


def load_examples(path: Path) -> list[Example]:
    if not path.is_file():
        raise TuneDataError(f"data file not found: {path}")
    examples = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TuneDataError(f"{path}:{lineno}: invalid JSON ({exc})") from exc
            examples.append(_example_from_row(row, f"{path}:{lineno}"))
    return examples


def split_holdout(examples: list[Example], holdout: int) -> tuple[list[Example], list[Example]]:
    """(train, held-out): the last `holdout` rows are held out, so the split is reproducible."""
    if holdout < 0 or holdout >= len(examples):
        raise TuneDataError(f"holdout {holdout} leaves no training rows out of {len(examples)}")
    cut = len(examples) - holdout
    return examples[:cut], examples[cut:]


def prompt_token_ids(tokenizer: Any, turns: Sequence[tuple[str, str]]) -> list[int]:
    """The prompt as served: chat template with the generation prompt, or a plain fallback."""
    messages = [{"role": role, "content": content} for role, content in turns]
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    text = "".join(f"{role}: {content}\n" for role, content in turns) + "assistant: "
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def encode_example(tokenizer: Any, example: Example, max_len: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with the prompt masked out; empty when the response does not fit."""
    prompt = prompt_token_ids(tokenizer, example.prompt)
    response = list(tokenizer(example.response, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        response.append(tokenizer.eos_token_id)
    ids = (prompt + response)[:max_len]
    labels = ([IGNORE_INDEX] * len(prompt) + response)[:max_len]
    if all(label == IGNORE_INDEX for label in labels):
        return [], []
    return ids, labels


def encode_all(
    tokenizer: Any, examples: Sequence[Example], max_len: int
) -> list[tuple[list[int], list[int]]]:
    encoded = [encode_example(tokenizer, ex, max_len) for ex in examples]
    return [pair for pair in encoded if pair[0]]


def collate(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-padded batch tensors (padding is masked out of attention and loss)."""
    import torch

    width = max(len(ids) for ids, _ in pairs)
    ids_rows, label_rows, mask_rows = [], [], []
    for ids, labels in pairs:
        pad = width - len(ids)
        ids_rows.append(ids + [pad_id] * pad)
        label_rows.append(labels + [IGNORE_INDEX] * pad)
        mask_rows.append([1] * len(ids) + [0] * pad)
    return {
        "input_ids": torch.tensor(ids_rows),
        "labels": torch.tensor(label_rows),
        "attention_mask": torch.tensor(mask_rows),
    }


# ------------------------------------------------------------------------------ training


def _summed_loss(model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """Sum of response-token NLL over the batch, and the number of those tokens."""
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shift_logits = logits[:, :-1].float()
    shift_labels = batch["labels"][:, 1:]
    loss = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss, int((shift_labels != IGNORE_INDEX).sum())


def evaluate_loss(
    model: Any, pairs: Sequence[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 8
) -> LossMetrics:
    """Token-weighted mean NLL and perplexity over the response tokens of `pairs`."""
    import torch

    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            loss, n = _summed_loss(model, collate(pairs[start : start + batch_size], pad_id))
            total += float(loss)
            count += n
    model.train(was_training)
    mean = total / max(count, 1)
    return LossMetrics(loss=mean, perplexity=math.exp(min(mean, 50.0)), tokens=count)


def _lr_at(step: int, cfg: TuneConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    remaining = max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.lr * max(0.0, 1.0 - (step - cfg.warmup_steps) / remaining)


def _batches(n: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Index batches for `steps` steps: shuffled epochs, reshuffled each pass."""
    rng = random.Random(seed)
    order: list[int] = []
    out = []
    for _ in range(steps):
        batch: list[int] = []
        while len(batch) < batch_size:
            if not order:
                order = list(range(n))
                rng.shuffle(order)
            batch.append(order.pop())
        out.append(batch)
    return out


def lora_model(base_model: Any, cfg: TuneConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    targets = cfg.target_modules
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base_model, lora)


def train_steps(
    model: Any,
    train: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    cfg: TuneConfig,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Run `cfg.steps` AdamW steps over response tokens; returns the per-step mean losses."""
    import torch
    from tqdm.auto import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    model.train()
    losses = []
    bar = tqdm(total=cfg.steps, desc="lora", unit="step", disable=not cfg.progress)
    for step, indices in enumerate(_batches(len(train), cfg.batch_size, cfg.steps, cfg.seed)):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, cfg)
        loss_sum, n = _summed_loss(model, collate([train[i] for i in indices], pad_id))
        loss = loss_sum / max(n, 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        bar.update(1)
        if on_step is not None:
            on_step(step, losses[-1])
    bar.close()
    model.eval()
    return losses


# ------------------------------------------------------------------------------ entry point


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def _metadata(
    cfg: TuneConfig,
    source: str,
    data_sha: str,
    counts: dict[str, int],
    metrics: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    hyper = {
        k: v
        for k, v in asdict(cfg).items()
        if k not in ("base", "data", "out", "cache_dir", "progress", "gguf_file")
    }
    return {
        "version": METADATA_VERSION,
        "kind": "lora",
        "base": cfg.base,
        "base_gguf_file": cfg.gguf_file,
        "base_resolved": source,
        "data": {"path": str(cfg.data), "sha256": data_sha, **counts},
        "steps": cfg.steps,
        "hyperparameters": hyper,
        "metrics": metrics,
        "train_seconds": round(seconds, 2),
        "versions": _versions(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def load_base(
    base: str, gguf_file: str | None = None, cache_dir: Path | None = None
) -> tuple[Any, Any, str]:
    """(model, tokenizer, resolved source) in float32, GGUF converted once and cached."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from experts.upcycle import prepare_base

    source = prepare_base(base, gguf_file=gguf_file, cache_dir=cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    return model, tokenizer, source


def tune(cfg: TuneConfig) -> TuneResult:
    """Fine-tune a LoRA adapter and write it with metadata.json to `cfg.out`."""
    import torch

    from experts.upcycle import atomic_dir

    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        raise TuneDataError(f"{out} exists and is not empty")
    torch.manual_seed(cfg.seed)
    examples = load_examples(cfg.data)
    train_ex, held_ex = split_holdout(examples, cfg.holdout)
    if cfg.max_train_examples is not None:
        train_ex = train_ex[: cfg.max_train_examples]
    base_model, tokenizer, source = load_base(cfg.base, cfg.gguf_file, cfg.cache_dir)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    train = encode_all(tokenizer, train_ex, cfg.max_len)
    held = encode_all(tokenizer, held_ex, cfg.max_len)
    if not train:
        raise TuneDataError("no training example fits in max_len")
    model = lora_model(base_model, cfg)
    before = evaluate_loss(model, held, pad_id) if held else None
    start = time.perf_counter()
    losses = train_steps(model, train, pad_id, cfg)
    seconds = time.perf_counter() - start
    after = evaluate_loss(model, held, pad_id) if held else None
    empty = LossMetrics(float("nan"), float("nan"), 0)
    metrics = {
        "holdout_before": asdict(before or empty),
        "holdout_after": asdict(after or empty),
        "train_loss_first": losses[0],
        "train_loss_last_10": sum(losses[-10:]) / len(losses[-10:]),
    }
    counts = {"rows": len(examples), "train_examples": len(train), "holdout_examples": len(held)}
    meta = _metadata(cfg, source, file_sha256(cfg.data), counts, metrics, seconds)
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp))
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return TuneResult(out, before or empty, after or empty, len(train), len(held), seconds, meta)
