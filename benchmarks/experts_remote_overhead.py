"""Per-call client overhead of remote experts against an instant OpenAI-compatible server.

The server (uvicorn, its own process, loopback) answers at once, so the latency measured is the
client's own cost plus the loopback HTTP round trip. Compared: a bare httpx POST (the floor),
RemoteBackend through litellm (the default), and the direct httpx client (`client: httpx`).

    nice -n 10 .venv/bin/python benchmarks/experts_remote_overhead.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

ANSWER = {
    "id": "c",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}


def serve(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat() -> dict[str, Any]:
        return ANSWER

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit("server did not start")


Call = Callable[[], Awaitable[Any]]


async def measure(call: Call, n: int, concurrency: int) -> dict[str, float]:
    for _ in range(20):  # warm up: connection pool, imports, first-call caches
        await call()
    sequential: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        sequential.append((time.perf_counter() - t0) * 1000)
    sem = asyncio.Semaphore(concurrency)

    async def bounded() -> None:
        async with sem:
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(bounded() for _ in range(n)))
    rps = n / (time.perf_counter() - start)
    sequential.sort()
    return {
        "p50_ms": statistics.median(sequential),
        "p99_ms": sequential[int(0.99 * (len(sequential) - 1))],
        f"rps_at_{concurrency}": rps,
    }


async def run(port: int, n: int, concurrency: int) -> dict[str, dict[str, float]]:
    import httpx

    from experts.base import GenerationParams, Message
    from experts.registry import build_backend
    from experts.spec import ExpertSpec

    base = f"http://127.0.0.1:{port}/v1"
    messages = [Message("user", "hello")]
    params = GenerationParams(max_tokens=8)
    body = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
    results: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(base_url=base) as raw:
        results["bare httpx POST"] = await measure(
            lambda: raw.post("/chat/completions", json=body), n, concurrency
        )
    for client in ("httpx", "litellm"):
        spec = ExpertSpec(backend="remote", model="openai/m", api_base=base, client=client)
        backend = build_backend("bench", spec)
        results[f"RemoteBackend client={client}"] = await measure(
            lambda b=backend: b.generate(messages, params), n, concurrency
        )
        await backend.aclose()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=300, help="calls per measurement")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--out", default="bench-out/experts_remote_overhead.json")
    args = p.parse_args()
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(port,), daemon=True)
    server.start()
    try:
        wait_for(port)
        results = asyncio.run(run(port, args.n, args.concurrency))
    finally:
        server.terminate()
        server.join(5)
    floor = results["bare httpx POST"]["p50_ms"]
    print(f"| client | p50 ms | p99 ms | overhead p50 ms | RPS at {args.concurrency} |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        rps = r[f"rps_at_{args.concurrency}"]
        print(
            f"| {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['p50_ms'] - floor:.2f} | {rps:.0f} |"
        )
    import litellm

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {
        "python": platform.python_version(),
        "litellm": getattr(litellm, "__version__", None) or _dist_version("litellm"),
        "httpx": _dist_version("httpx"),
        "cpu_count": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
    }
    out.write_text(
        json.dumps({"args": vars(args), "results": results, "environment": env}, indent=2)
    )
    print(f"wrote {out}")


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
