"""Gateway overhead: the same instant backend called directly, via slm-router, via LiteLLM proxy.

`python -m loadtest.overhead --out DIR` prints a table and writes DIR/overhead.json with, for each
of `direct`, `slm_router` and `litellm_proxy`: p50_ms / p99_ms at a fixed closed-loop concurrency
and max_rps (the highest open-loop rate whose p99 stays under a bound with no errors), plus the
latency each gateway adds over `direct` and the ratios between the two gateways.
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
from loadtest.runner import RunResult, run_load
from loadtest.stats import percentile
from loadtest.workload import WorkItem, builtin_workload

TARGETS = ("direct", "slm_router", "litellm_proxy")


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
    target: Target, items: list[WorkItem], concurrency: int, seconds: float
) -> dict[str, Any]:
    """Closed loop at a fixed concurrency: p50/p99 and the RPS it reached."""
    cfg = _cfg(
        target, mode="closed", concurrency=concurrency, duration_s=seconds, max_requests=1_000_000
    )
    result = _run(cfg, items)
    lat = _latencies_ms(result)
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
        max_requests=1_000_000,
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


def find_max_rps(target: Target, items: list[WorkItem], s: Settings) -> dict[str, Any]:
    return search_max_rps(lambda rps: run_step(target, items, rps, s), s)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _median(values: list[Any]) -> float | None:
    nums = [v for v in values if v is not None]
    return _round(percentile(nums, 50)) if nums else None


def measure_once(target: Target, items: list[WorkItem], s: Settings, tag: str) -> dict[str, Any]:
    """Warm-up, latency at `concurrency` and at `loaded_concurrency`, then max RPS."""
    log = f"[{target.name} {tag}]"
    print(f"{log} warm-up, latency at concurrency {s.concurrency} ...", file=sys.stderr)
    warm_up(target, items, s)
    run = measure_latency(target, items, s.concurrency, s.latency_s)
    print(f"{log} p50 {run['p50_ms']} ms p99 {run['p99_ms']} ms; loaded ...", file=sys.stderr)
    run["loaded"] = measure_latency(target, items, s.loaded_concurrency, s.latency_s)
    run.update(find_max_rps(target, items, s))
    print(
        f"{log} loaded p50 {run['loaded']['p50_ms']} ms; max RPS {run['max_rps']}", file=sys.stderr
    )
    return run


def aggregate(target: Target, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Headline numbers are medians over the repeats; every repeat is kept under `runs`."""
    loaded = [r["loaded"] for r in runs]
    return {
        "available": True,
        "url": target.url,
        "p50_ms": _median([r["p50_ms"] for r in runs]),
        "p99_ms": _median([r["p99_ms"] for r in runs]),
        "max_rps": _median([r["max_rps"] for r in runs]),
        "loaded_p50_ms": _median([r["p50_ms"] for r in loaded]),
        "loaded_p99_ms": _median([r["p99_ms"] for r in loaded]),
        "loaded_rps": _median([r["rps"] for r in loaded]),
        "runs": runs,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b in (None, 0) else round(a / b, 3)  # type: ignore[operator]


def _paired(runs: list[dict[str, Any]] | None, base: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Median over turns of (gateway - direct) within the same turn: the machine's background
    load drifts between turns, and pairing cancels what both saw alike."""
    if not runs or not base or len(runs) != len(base):
        return {}
    out: dict[str, Any] = {}
    for k in ("p50_ms", "p99_ms"):
        diffs = [
            g[k] - d[k]
            for g, d in zip(runs, base, strict=True)
            if g.get(k) is not None and d.get(k) is not None
        ]
        out[f"{k}_paired"] = _median(diffs)
    return out


def compare(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Added latency over direct, and slm_router against direct and litellm_proxy (pure)."""
    direct = results.get("direct") or {}
    added: dict[str, dict[str, float | None]] = {}
    for name in ("slm_router", "litellm_proxy"):
        r = results.get(name) or {}
        if r.get("available") and direct.get("available"):
            added[name] = {
                k: _round(r[k] - direct[k])
                if r.get(k) is not None and direct.get(k) is not None
                else None
                for k in ("p50_ms", "p99_ms", "loaded_p50_ms", "loaded_p99_ms")
            }
            added[name].update(_paired(r.get("runs"), direct.get("runs")))
    slm, lite = results.get("slm_router") or {}, results.get("litellm_proxy") or {}
    ratios: dict[str, float | None] = {}
    for name, r in (("slm_router", slm), ("litellm_proxy", lite)):
        if r.get("available"):
            ratios[f"{name}_vs_direct_p50"] = _ratio(r.get("p50_ms"), direct.get("p50_ms"))
            ratios[f"{name}_vs_direct_rps"] = _ratio(r.get("max_rps"), direct.get("max_rps"))
    verdict = None
    if "slm_router" in added and "litellm_proxy" in added:
        a_slm, a_lite = added["slm_router"]["p50_ms"], added["litellm_proxy"]["p50_ms"]
        ratios["slm_vs_litellm_added_p50"] = _ratio(a_slm, a_lite)
        ratios["slm_vs_litellm_added_p99"] = _ratio(
            added["slm_router"]["p99_ms"], added["litellm_proxy"]["p99_ms"]
        )
        ratios["slm_vs_litellm_rps"] = _ratio(slm.get("max_rps"), lite.get("max_rps"))
        verdict = (
            a_slm is not None
            and a_lite is not None
            and a_slm <= a_lite
            and (slm.get("max_rps") or 0) >= (lite.get("max_rps") or 0)
        )
    return {"added": added, "ratios": ratios, "slm_router_meets_target": verdict}


def render_table(results: dict[str, dict[str, Any]], comparison: dict[str, Any]) -> str:
    cols = ("p50 ms", "p99 ms", "+p50 ms", "+p99 ms", "p50 @C", "p99 @C", "max RPS")
    lines = [f"{'target':<15}" + "".join(f"{c:>10}" for c in cols)]
    for name in TARGETS:
        r = results.get(name) or {}
        if not r.get("available"):
            lines.append(f"{name:<15}  unavailable: {str(r.get('reason', '?'))[:200]}")
            continue
        add = comparison["added"].get(name, {})
        cells = (
            r["p50_ms"],
            r["p99_ms"],
            add.get("p50_ms"),
            add.get("p99_ms"),
            r["loaded_p50_ms"],
            r["loaded_p99_ms"],
            r["max_rps"],
        )
        lines.append(f"{name:<15}" + "".join(f"{'-' if c is None else c:>10}" for c in cells))
    lines.append("(@C: at the loaded concurrency; + : added over direct)")
    return "\n".join(lines)


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
    items = builtin_workload()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    backend = start_backend()
    running: dict[str, Started] = {}
    try:
        running, results = _start_all(only, starters, backend.url)
        targets = {n: Target(n, st.url, st.model, st.api_key) for n, st in running.items()}
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in targets}
        for i in range(s.repeats):
            for name, target in targets.items():
                runs[name].append(measure_once(target, items, s, f"{i + 1}/{s.repeats}"))
        for name, target in targets.items():
            results[name] = {
                **aggregate(target, runs[name]),
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
