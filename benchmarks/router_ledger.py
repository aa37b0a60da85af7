"""What the ledger, keys and budgets add to a request, against a real local redis-server.

nice -n 10 .venv/bin/python benchmarks/router_ledger.py --runs 3 --out bench-out/router_ledger.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from router.finance.budgets import Limiter
from router.finance.keys import KeyStore
from router.finance.ledger import Ledger
from router.finance.ledger_types import CostRecord
from router.finance.redis_server import EmbeddedRedis, free_port, make_client


def _rec(i: int, tag: str) -> CostRecord:
    return CostRecord(
        request_id=f"{tag}-{i}",
        ts=time.time(),
        team=f"team{i % 5}",
        expert=f"expert{i % 4}",
        domain=f"domain{i % 3}",
        input_tokens=100 + i % 50,
        output_tokens=200,
        cost_nano=1000 + i,
        baseline_nano=5000,
        latency_ms=12.5,
    )


def _pct(xs: list[float], p: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


async def one_run(url: str, tmp: Path, run: int) -> dict[str, float]:
    out: dict[str, float] = {}
    redis = make_client(url)
    ledger = Ledger(url, tmp / f"spool-{run}.jsonl", prefix=f"b{run}")
    # 1. What the request path pays: scheduling the write.
    n = 2000
    t0 = time.perf_counter()
    for i in range(n):
        await ledger.record(_rec(i, f"r{run}"))
    out["record_call_us"] = (time.perf_counter() - t0) / n * 1e6
    await ledger.drain(60)
    out["burst_records_per_s"] = n / (time.perf_counter() - t0)
    out["burst_spooled"] = ledger.spooled
    # 2. One write, waited for.
    lat = []
    for i in range(300):
        t = time.perf_counter()
        await ledger.write(_rec(i, f"w{run}"))
        lat.append((time.perf_counter() - t) * 1e3)
    out["write_p50_ms"], out["write_p99_ms"] = _pct(lat, 50), _pct(lat, 99)
    # 3. Admission and settlement.
    store = KeyStore(redis, prefix=f"b{run}")
    created = await store.create_key("bench", budget_usd=10**6, rpm=10**6, tpm=10**9)
    limiter = Limiter(redis, prefix=f"b{run}")
    adm, stl = [], []
    for _ in range(500):
        t = time.perf_counter()
        res = await limiter.admit(created.info, 5000, 300)
        t2 = time.perf_counter()
        await limiter.settle(res, 4000, 250)
        adm.append((t2 - t) * 1e3)
        stl.append((time.perf_counter() - t2) * 1e3)
    out["admit_p50_ms"], out["admit_p99_ms"] = _pct(adm, 50), _pct(adm, 99)
    out["settle_p50_ms"] = _pct(stl, 50)
    # 4. Authentication: cached (hot path) and uncached.
    cold = KeyStore(redis, prefix=f"b{run}", cache_ttl_s=0)
    hot = KeyStore(redis, prefix=f"b{run}", cache_ttl_s=60)
    await hot.authenticate(created.plaintext)
    for name, ks in (("auth_cached_us", hot), ("auth_uncached_us", cold)):
        t = time.perf_counter()
        for _ in range(500):
            await ks.authenticate(created.plaintext)
        out[name] = (time.perf_counter() - t) / 500 * 1e6
    await ledger.aclose()
    # 5. Redis down: spool rate; then replay rate.
    down = Ledger(f"redis://127.0.0.1:{free_port()}/0", tmp / f"down-{run}.jsonl", prefix=f"b{run}")
    t = time.perf_counter()
    for i in range(n):
        await down.record(_rec(i, f"d{run}"))
    await down.drain(60)
    out["spool_records_per_s"] = n / (time.perf_counter() - t)
    await down.redis.aclose()
    replay = Ledger(url, tmp / f"down-{run}.jsonl", prefix=f"b{run}")
    t = time.perf_counter()
    replayed = await replay.flush_spool()
    out["replay_records_per_s"] = replayed / (time.perf_counter() - t)
    await replay.aclose()
    await redis.aclose()
    return out


async def main_async(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d, EmbeddedRedis(Path(d) / "redis") as url:
        results = [await one_run(url, Path(d), r) for r in range(runs)]
    medians = {k: statistics.median(r[k] for r in results) for k in results[0]}
    return {"runs": results, "median": medians}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench-out/router_ledger.json"))
    args = ap.parse_args()
    report = asyncio.run(main_async(args.runs))
    report["machine"] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": __import__("os").cpu_count(),
    }
    print(f"{'metric':<24}{'median':>12}")
    for k, v in report["median"].items():
        print(f"{k:<24}{v:>12.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
