"""GSM8K LoRA demo: tune SmolLM2-135M-Instruct on GSM8K train rows, report held-out perplexity and
final-answer exact match before and after, and the tuning time on this machine.

The last --holdout rows of the file are never trained on (experts.tune.split_holdout); perplexity
is measured on all of them, exact match (greedy) on the first --em-problems of them.

    nice -n 10 .venv/bin/python benchmarks/experts_lora_gsm8k.py --out-json /tmp/gsm8k_lora.json
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> str | None:
    """The number after '####', else the last number in the text (commas and '.0' stripped)."""
    tail = text.split("####", 1)[1] if "####" in text else text
    found = _NUMBER.findall(tail)
    if not found:
        return None
    value = (found[0] if "####" in text else found[-1]).replace(",", "")
    return value[:-2] if value.endswith(".0") else value.rstrip(".")


def greedy_answers(
    model: Any, tokenizer: Any, questions: list[str], max_new_tokens: int, batch_size: int
) -> list[str]:
    import torch

    from experts.tune import prompt_token_ids

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[str] = []
    for start in range(0, len(questions), batch_size):
        prompts = [
            prompt_token_ids(tokenizer, [("user", q)])
            for q in questions[start : start + batch_size]
        ]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
        out += tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
    return out


def exact_match(
    model: Any, tokenizer: Any, rows: list[Any], args: argparse.Namespace
) -> tuple[float, float, list[str]]:
    start = time.perf_counter()
    answers = greedy_answers(
        model, tokenizer, [r.prompt[-1][1] for r in rows], args.max_new_tokens, args.gen_batch_size
    )
    hits = [final_number(a) == final_number(r.response) for a, r in zip(answers, rows, strict=True)]
    return sum(hits) / len(hits), time.perf_counter() - start, answers


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="smollm2-135m-instruct")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--holdout", type=int, default=200)
    parser.add_argument("--train-examples", type=int, default=400)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--max-len", type=int, default=384)
    parser.add_argument("--em-problems", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--gen-batch-size", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adapter-out", type=Path, default=None)
    parser.add_argument("--out-json", type=Path, default=Path("gsm8k_lora.json"))
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"GSM8K data not found at {args.data}")

    import torch

    from experts.lora import attach_adapters, use_adapter
    from experts.tune import TuneConfig, load_base, load_examples, split_holdout, tune

    torch.manual_seed(args.seed)
    _log("tuning (held-out loss before, training, held-out loss after)")
    adapter_dir = args.adapter_out or Path(tempfile.mkdtemp(prefix="gsm8k-lora-")) / "adapter"
    result = tune(
        TuneConfig(
            base=args.base,
            data=args.data,
            out=adapter_dir,
            steps=args.steps,
            holdout=args.holdout,
            max_train_examples=args.train_examples,
            batch_size=args.batch_size,
            lr=args.lr,
            rank=args.rank,
            alpha=2 * args.rank,
            max_len=args.max_len,
            seed=args.seed,
        )
    )
    _log(f"tuned in {result.train_seconds:.0f} s; exact match before/after")
    _, held = split_holdout(load_examples(args.data), args.holdout)
    em_rows = held[: args.em_problems]
    model, tokenizer, _ = load_base(args.base)
    model = attach_adapters(model, {"gsm8k": adapter_dir})
    with use_adapter(model, None):
        em_before, gen_s_before, ans_before = exact_match(model, tokenizer, em_rows, args)
    with use_adapter(model, "gsm8k"):
        em_after, gen_s_after, ans_after = exact_match(model, tokenizer, em_rows, args)

    _log(f"exact match {em_before:.3f} -> {em_after:.3f}")
    import peft
    import transformers

    report = {
        "command_args": vars(args)
        | {"data": str(args.data), "out_json": str(args.out_json), "adapter_out": str(adapter_dir)},
        "train_examples": result.train_examples,
        "holdout_examples": result.holdout_examples,
        "em_problems": len(em_rows),
        "tokens_seen": args.steps * args.batch_size,
        "train_seconds": round(result.train_seconds, 1),
        "holdout_loss_before": result.before.loss,
        "holdout_loss_after": result.after.loss,
        "holdout_ppl_before": result.before.perplexity,
        "holdout_ppl_after": result.after.perplexity,
        "em_before": em_before,
        "em_after": em_after,
        "gen_seconds_before": round(gen_s_before, 1),
        "gen_seconds_after": round(gen_s_after, 1),
        "sample_answers": {
            "question": em_rows[0].prompt[-1][1],
            "before": ans_before[0],
            "after": ans_after[0],
            "reference": em_rows[0].response,
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": torch.get_num_threads(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
    }
    args.out_json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'metric':<28}{'before':>12}{'after':>12}")
    print(f"{'held-out loss':<28}{result.before.loss:>12.4f}{result.after.loss:>12.4f}")
    print(
        f"{'held-out perplexity':<28}{result.before.perplexity:>12.3f}"
        f"{result.after.perplexity:>12.3f}"
    )
    print(f"{'exact match (n=' + str(len(em_rows)) + ')':<28}{em_before:>12.3f}{em_after:>12.3f}")
    print(
        f"tuning: {args.steps} steps x {args.batch_size} examples in "
        f"{result.train_seconds:.0f} s; wrote {args.out_json}"
    )


if __name__ == "__main__":
    main()
