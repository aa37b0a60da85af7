"""Per-token time of the incremental detokeniser: DecodeStream (used) vs the offset scheme it
replaced, on SmolLM2's tokenizer, interleaved rounds; prints a table and writes JSON.

    .venv/bin/python benchmarks/experts_detok.py --tokens 4000 --rounds 5 --out detok.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from typing import Any

from experts.detok import IncrementalDetokenizer, _Offsets


def per_token_us(make: Any, ids: list[int]) -> float:
    detok = make()
    started = time.perf_counter()
    for token in ids:
        detok.push(token)
    return 1e6 * (time.perf_counter() - started) / len(ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="detok_bench.json")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    from experts.builtin import smollm2_gguf

    folder, name = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    rng = random.Random(0)
    words = [
        "the",
        "model",
        "answers",
        "a",
        "question",
        "about",
        "日本語",
        "and",
        "émojis",
        "🎉",
        "in",
        "code",
        "def",
        "f(x):",
        "return",
    ]
    text = " ".join(rng.choice(words) for _ in range(args.tokens))
    ids = tok(text, add_special_tokens=False)["input_ids"][: args.tokens]
    load = os.getloadavg()
    runs: dict[str, list[float]] = {"DecodeStream": [], "offsets (before)": []}
    for _ in range(args.rounds):  # interleaved
        runs["DecodeStream"].append(per_token_us(lambda: IncrementalDetokenizer(tok, []), ids))
        runs["offsets (before)"].append(per_token_us(lambda: _Offsets(tok, []), ids))
    result = {
        "tokens": len(ids),
        "rounds": args.rounds,
        "load_before": load,
        "load_after": os.getloadavg(),
        "median_us_per_token": {k: statistics.median(v) for k, v in runs.items()},
        "runs_us_per_token": runs,
    }
    for k, v in result["median_us_per_token"].items():
        print(f"{k:18} {v:8.2f} us/token (median of {args.rounds})")
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print(f"load {load} -> {os.getloadavg()}; wrote {args.out}")


if __name__ == "__main__":
    main()
