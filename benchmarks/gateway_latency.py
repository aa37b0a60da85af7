"""Gateway latency: classifier in the ingress vs in its own batched deployment.

Same app, same fake (instant) expert, same default routes and examples; only
`classifier.placement` changes. Sequential requests give the per-request latency; a closed loop
at concurrency C gives throughput. Medians over --runs repeats, alternating placements so drift on
this shared machine hits both.

    python benchmarks/gateway_latency.py --out bench-out/gateway_latency
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [
    "write a python function that reverses a list",
    "what is 17 times 23",
    "what are the symptoms of the flu",
    "how does compound interest work",
    "write a short poem about autumn",
    "my docker container exits immediately, why",
]


def policy(placement: str) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())
    doc["experts"] = {"smollm2": {"backend": "fake", "reply": "ok"}}
    doc["classifier"]["placement"] = placement
    return doc


def chat_body(i: int) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


async def sequential(url: str, n: int) -> list[float]:
    out = []
    async with httpx.AsyncClient(timeout=30) as c:
        for i in range(n):
            body = {
                "model": "auto",
                "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            }
            t = time.perf_counter()
            r = await c.post(f"{url}/v1/chat/completions", json=body)
            r.raise_for_status()
            out.append((time.perf_counter() - t) * 1000)
    return out


async def closed_loop(url: str, concurrency: int, seconds: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(c: httpx.AsyncClient, k: int) -> None:
        nonlocal done
        i = k
        while time.perf_counter() < stop:
            body = {
                "model": "auto",
                "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            }
            (await c.post(f"{url}/v1/chat/completions", json=body)).raise_for_status()
            done += 1
            i += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c, k) for k in range(concurrency)))
        return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--requests", type=int, default=150)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--out", type=Path, default=Path("bench-out/gateway_latency"))
    args = ap.parse_args()
    from ray import serve

    from router.config import AppConfig
    from router.serving.app import APP_NAME, build_app
    from router.serving.runtime import start_ray

    start_ray()
    port = 8123
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    results: dict[str, dict[str, list[float]]] = {}
    for run in range(args.runs):
        for placement in ("ingress", "deployment"):
            config = AppConfig.model_validate(policy(placement))
            serve.run(build_app(config), name=APP_NAME, route_prefix="/")
            asyncio.run(sequential(url, 20))  # warm-up
            lat = asyncio.run(sequential(url, args.requests))
            rps = asyncio.run(closed_loop(url, args.concurrency, args.seconds))
            r = results.setdefault(placement, {"p50": [], "p99": [], "rps": []})
            r["p50"].append(statistics.median(lat))
            r["p99"].append(pct(lat, 99))
            r["rps"].append(rps)
            print(
                f"run {run} {placement:<10} p50 {r['p50'][-1]:.1f} ms  "
                f"p99 {r['p99'][-1]:.1f} ms  {rps:.0f} rps",
                flush=True,
            )
            serve.delete(APP_NAME)
    summary = {
        p: {k: round(statistics.median(v), 2) for k, v in r.items()} for p, r in results.items()
    }
    meta = {
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "runs": args.runs,
        "requests": args.requests,
        "concurrency": args.concurrency,
    }
    print(f"\n{'placement':<12}{'p50 ms':>10}{'p99 ms':>10}{'rps@' + str(args.concurrency):>10}")
    for p, s in summary.items():
        print(f"{p:<12}{s['p50']:>10}{s['p99']:>10}{s['rps']:>10}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gateway_latency.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "runs": results}, indent=2)
    )
    serve.shutdown()


if __name__ == "__main__":
    main()
