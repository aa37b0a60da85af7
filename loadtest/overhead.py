"""Gateway overhead: the same instant backend called directly, via slm-router, via LiteLLM proxy.

`python -m loadtest.overhead --out DIR` prints a table and writes DIR/overhead.json with, for each
of `direct`, `slm_router` and `litellm_proxy`: p50_ms / p99_ms at a fixed closed-loop concurrency
and max_rps (the highest open-loop rate whose p99 stays under a bound with no errors), the
streaming time to first token, plus the latency each gateway adds over `direct` and the ratios
between the two gateways (loadtest/overhead_report.py).

Every headline figure is on unique prompts (`prompts: "unique"`, loadtest/prompts.py): no target
ever sees a prompt twice, so no cache flatters it. The same handful of prompts repeated (caches
hit) is measured apart and reported as `repeated_*`, never as the headline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadtest.cli import run_async
from loadtest.config import LoadConfig, constant_profile
from loadtest.gateways import (
    Started,
    start_backend,
    start_litellm_proxy,
    start_slm_router,
)
from loadtest.overhead_report import TARGETS, aggregate, compare, render_table
from loadtest.prompts import PromptSource
from loadtest.runner import RunResult, run_load
from loadtest.stats import percentile
from loadtest.workload import WorkItem, builtin_workload


@dataclass(frozen=True)
class Settings:
    concurrency: int = 1
    loaded_concurrency: int = 8
    latency_s: float = 10.0
    warmup_requests: int = 100
    p99_bound_ms: float = 200.0
    start_rps: float = 10.0
    step_s: float = 5.0
    max_rps_cap: float = 2000.0
    refine_steps: int = 2
    retries: int = 1
    repeats: int = 1


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    model: str
    api_key: str | None = None


@dataclass(frozen=True)
class StepResult:
    offered_rps: float
    achieved_rps: float
    p99_ms: float | None
    errors: int
    ok: bool


def _cfg(target: Target, **kw: Any) -> LoadConfig:
    base: dict[str, Any] = {
        "url": target.url,
        "model": target.model,
        "api_key": target.api_key,
        "max_tokens": 16,
        "timeout_s": 10.0,
        "spend": False,
        "serve_status_url": None,
    }
    return LoadConfig(**{**base, **kw})


def _run(cfg: LoadConfig, items: list[WorkItem]) -> RunResult:
    return run_async(run_load(cfg, items, progress=None))


def _latencies_ms(result: RunResult) -> list[float]:
    return [r.latency_s * 1000 for r in result.records if r.ok]


def warm_up(target: Target, items: list[WorkItem], s: Settings) -> None:
    """First requests pay for connections, imports and caches in every target: discard them."""
    cfg = _cfg(
        target,
        mode="closed",
        concurrency=s.loaded_concurrency,
        duration_s=30.0,
        max_requests=s.warmup_requests,
    )
    _run(cfg, items)


def measure_latency(
    target: Target, items: list[WorkItem], concurrency: int, seconds: float, stream: bool = False
) -> dict[str, Any]:
    """Closed loop at a fixed concurrency: p50/p99 and the RPS it reached. At most one request
    per item: a unique-prompt list is never wrapped round."""
    cfg = _cfg(
        target,
        mode="closed",
        concurrency=concurrency,
        duration_s=seconds,
        max_requests=len(items),
        stream=stream,
    )
    result = _run(cfg, items)
    lat = _latencies_ms(result)
    if stream:
        ttft = [r.ttft_s * 1000 for r in result.records if r.ok and r.ttft_s is not None]
        return {
            "ttft_p50_ms": _round(percentile(ttft, 50)),
            "ttft_p99_ms": _round(percentile(ttft, 99)),
            "requests": len(result.records),
            "errors": sum(not r.ok for r in result.records),
        }
    return {
        "concurrency": concurrency,
        "p50_ms": _round(percentile(lat, 50)),
        "p99_ms": _round(percentile(lat, 99)),
        "rps": round(len(result.records) / result.elapsed_s, 1),
        "requests": len(result.records),
        "errors": sum(not r.ok for r in result.records),
    }


def run_step(target: Target, items: list[WorkItem], rps: float, s: Settings) -> StepResult:
    cfg = _cfg(
        target,
        mode="open",
        profile=constant_profile(rps, s.step_s),
        duration_s=s.step_s,
        max_requests=len(items),
        seed=int(rps),
        max_in_flight=256,
        max_lag_s=1.0,
    )
    result = _run(cfg, items)
    lat = _latencies_ms(result)
    errors = sum(not r.ok for r in result.records)
    p99 = percentile(lat, 99)
    # Served within the step's window against what was actually sent (Poisson counts vary):
    # a backlog that only drains after the window fails the step.
    in_window = sum(1 for r in result.records if r.ok and r.start_s + r.latency_s <= s.step_s)
    achieved = in_window / s.step_s
    sent = len(result.records)
    ok = (
        errors == 0
        and result.stopped_by != "generator_lag"
        and p99 is not None
        and p99 <= s.p99_bound_ms
        and in_window >= 0.9 * sent
    )
    return StepResult(rps, round(achieved, 1), _round(p99), errors, ok)


def search_max_rps(probe: Callable[[float], StepResult], s: Settings) -> dict[str, Any]:
    """Double the offered rate until a step fails, then bisect between the last pass and fail.

    A failed step is probed once more before it counts: on a small shared machine one
    scheduling hiccup can blow a single p99, and the search should not stop on it.
    """
    steps: list[StepResult] = []

    def passes(rate: float) -> bool:
        for _ in range(1 + s.retries):
            steps.append(probe(rate))
            if steps[-1].ok:
                return True
        return False

    rate, passed, failed = s.start_rps, 0.0, 0.0
    while rate <= s.max_rps_cap:
        if not passes(rate):
            failed = rate
            break
        passed, rate = rate, rate * 2
    for _ in range(s.refine_steps if failed and passed else 0):
        mid = round((passed + failed) / 2, 1)
        passed, failed = (mid, failed) if passes(mid) else (passed, mid)
    best = max((st.achieved_rps for st in steps if st.ok), default=0.0)
    return {"max_rps": best, "steps": [asdict(st) for st in steps]}


def find_max_rps(target: Target, src: PromptSource, s: Settings) -> dict[str, Any]:
    # Poisson counts vary: room for 1.5x the step's expected arrivals, all of them new.
    return search_max_rps(
        lambda rps: run_step(target, src.take(int(rps * s.step_s * 1.5) + 10), rps, s), s
    )


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _enough(s: Settings, concurrency: int) -> int:
    """Unique prompts for a closed loop of `latency_s`: a generous bound on what it can send."""
    return int(s.latency_s * min(s.max_rps_cap, 400.0 * concurrency)) + 100


def measure_once(target: Target, src: PromptSource, s: Settings, tag: str) -> dict[str, Any]:
    """Warm-up, latency at `concurrency` and at `loaded_concurrency`, streaming TTFT, max RPS
    (all on prompts `src` never handed out before); then the repeated-prompt figures."""
    log = f"[{target.name} {tag}]"
    print(f"{log} warm-up, latency at concurrency {s.concurrency} ...", file=sys.stderr)
    warm_up(target, src.take(s.warmup_requests), s)
    run = measure_latency(target, src.take(_enough(s, s.concurrency)), s.concurrency, s.latency_s)
    print(f"{log} p50 {run['p50_ms']} ms p99 {run['p99_ms']} ms; loaded ...", file=sys.stderr)
    loaded = src.take(_enough(s, s.loaded_concurrency))
    run["loaded"] = measure_latency(target, loaded, s.loaded_concurrency, s.latency_s)
    stream_items = src.take(_enough(s, s.concurrency))
    run["stream"] = measure_latency(target, stream_items, s.concurrency, s.latency_s, stream=True)
    run.update(find_max_rps(target, src, s))
    repeated = builtin_workload() * 10_000  # the same ~40 prompts round and round
    run["repeated"] = measure_latency(target, repeated, s.concurrency, s.latency_s)
    print(
        f"{log} loaded p50 {run['loaded']['p50_ms']} ms; TTFT p50 {run['stream']['ttft_p50_ms']}"
        f" ms; max RPS {run['max_rps']}; repeated p50 {run['repeated']['p50_ms']} ms",
        file=sys.stderr,
    )
    return run


def _machine() -> dict[str, Any]:
    import httpx

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "httpx": httpx.__version__,
        # Other people's jobs share this CPU: the load average says how much.
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


Starter = Callable[[str], Started]


def _unavailable(reason: str) -> dict[str, Any]:
    return {
        "available": False,
        "reason": reason[:500],
        "p50_ms": None,
        "p99_ms": None,
        "max_rps": None,
    }


def _start_all(
    only: tuple[str, ...], starters: dict[str, Starter], backend_url: str
) -> tuple[dict[str, Started], dict[str, dict[str, Any]]]:
    running: dict[str, Started] = {}
    missing: dict[str, dict[str, Any]] = {}
    for name in TARGETS:
        if name not in only:
            missing[name] = _unavailable("not selected")
            continue
        try:
            running[name] = starters[name](backend_url)
        except Exception as exc:  # a peer that cannot start is a result, not a crash
            print(f"[{name}] unavailable: {exc}", file=sys.stderr)
            missing[name] = _unavailable(str(exc))
    return running, missing


def run_benchmark(
    out_dir: Path, s: Settings, only: tuple[str, ...], starters: dict[str, Starter]
) -> dict[str, Any]:
    """All targets up at once, measured in turns (a, b, c, a, b, c, ...), so that the
    machine's background load drifts over every target alike; medians over the turns."""
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    # One source per target: each sees the same texts in the same order, none of them twice.
    sources = {name: PromptSource.default() for name in TARGETS}
    backend = start_backend()
    running: dict[str, Started] = {}
    try:
        running, results = _start_all(only, starters, backend.url)
        targets = {n: Target(n, st.url, st.model, st.api_key) for n, st in running.items()}
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in targets}
        for i in range(s.repeats):
            for name, target in targets.items():
                runs[name].append(measure_once(target, sources[name], s, f"{i + 1}/{s.repeats}"))
        for name, target in targets.items():
            results[name] = {
                **aggregate(target.url, runs[name]),
                "start_s": round(running[name].start_s, 2),
            }
    finally:
        for started in running.values():
            started.stop()
        backend.stop()
    comparison = compare(results)
    doc = {
        **{name: results[name] for name in TARGETS},
        "comparison": comparison,
        "prompts": "unique",
        "prompt_source": sources["direct"].name,
        "settings": asdict(s),
        "machine": {**_machine(), "loadavg_at_start": load_at_start},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "overhead.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(render_table(results, comparison))
    return doc


def _direct(backend_url: str) -> Started:
    return Started(url=backend_url, model="instant", api_key=None, stop=lambda: None, start_s=0.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="loadtest.overhead", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("bench-out/overhead"))
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset")
    p.add_argument("--concurrency", type=int, default=Settings.concurrency)
    p.add_argument("--loaded-concurrency", type=int, default=Settings.loaded_concurrency)
    p.add_argument("--repeats", type=int, default=Settings.repeats, help="medians over N runs")
    p.add_argument("--latency-s", type=float, default=Settings.latency_s)
    p.add_argument("--p99-bound-ms", type=float, default=Settings.p99_bound_ms)
    p.add_argument("--step-s", type=float, default=Settings.step_s)
    p.add_argument("--start-rps", type=float, default=Settings.start_rps)
    p.add_argument("--slm-router-url", help="measure an already running gateway instead")
    p.add_argument(
        "--slm-router-policy",
        type=Path,
        help="policy YAML template for the gateway ({backend_url} is substituted)",
    )
    args = p.parse_args(argv)
    only = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    unknown = set(only) - set(TARGETS)
    if unknown:
        p.error(f"unknown targets: {sorted(unknown)}")
    s = Settings(
        concurrency=args.concurrency,
        loaded_concurrency=args.loaded_concurrency,
        repeats=args.repeats,
        latency_s=args.latency_s,
        p99_bound_ms=args.p99_bound_ms,
        step_s=args.step_s,
        start_rps=args.start_rps,
    )

    def slm(backend_url: str) -> Started:
        return start_slm_router(
            backend_url, url=args.slm_router_url, policy_template=args.slm_router_policy
        )

    starters: dict[str, Starter] = {
        "direct": _direct,
        "slm_router": slm,
        "litellm_proxy": start_litellm_proxy,
    }
    run_benchmark(args.out, s, only, starters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
