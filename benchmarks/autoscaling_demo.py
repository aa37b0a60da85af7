"""Per-expert autoscaling under a step load on one domain.

Three `backend: local` experts (a tiny random-weight Llama this script builds; each in its own
Serve deployment with autoscaling min 1 / max 3, target 1 ongoing request, short delays) sit
behind the shipped default policy's classifier and routes: maths -> `math-tiny`, code ->
`code-tiny`, the rest -> `general-tiny`. Each replica decodes one request at a time
(max_batch_size 1, max_ongoing_requests 2), so a replica's capacity is a few requests/s.

The load generator (loadtest.runner, open loop, Poisson) sends maths prompts only, routed by the
classifier (model "auto"): a low rate, a step up well past one replica's capacity, then low
again, then nothing. Serve's status (`serve.status()`, in this driver) is read every second:
running replicas per deployment. Expected: `math-tiny` grows to its max while the queue
drains and p99 recovers; `code-tiny` and `general-tiny` stay at 1; `math-tiny` shrinks back.

    nice -n 10 python benchmarks/autoscaling_demo.py --out bench-out/autoscaling
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.unit.test_experts_tune_tiny builds the tiny model

for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(_k, _v)

EXPERTS = ("math-tiny", "code-tiny", "general-tiny")


def demo_policy(tiny: Path, args: argparse.Namespace) -> str:
    doc = yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())
    expert = {
        "backend": "local",
        "model": str(tiny),
        "max_tokens_default": args.max_tokens,
        "max_batch_size": 1,
        "max_ongoing_requests": 2,
        "timeout_s": 120,
        "resources": {"num_cpus": 0.1},
        "replicas": {
            "min": 1,
            "max": args.max_replicas,
            "target_ongoing_requests": 1,
            "upscale_delay_s": args.upscale_delay_s,
            "downscale_delay_s": args.downscale_delay_s,
        },
    }
    doc["experts"] = {name: dict(expert) for name in EXPERTS}
    for route in doc["routing"]["routes"]:
        route["experts"] = {"math": ["math-tiny"], "code": ["code-tiny"]}.get(
            route["domain"], ["general-tiny"]
        )
    doc["routing"]["fallback"] = "general-tiny"
    return yaml.safe_dump(doc, sort_keys=False)


def math_workload() -> list[Any]:
    """The default policy's maths examples: the classifier routes them to math-tiny."""
    from loadtest.workload import WorkItem

    doc = yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())
    route = next(r for r in doc["routing"]["routes"] if r["domain"] == "math")
    return [
        WorkItem(messages=({"role": "user", "content": text},), domain="math")
        for text in route["examples"]
    ]


class ReplicaWatch(threading.Thread):
    """serve.status() every `interval_s`: RUNNING (and STARTING) replicas per deployment."""

    def __init__(self, app: str, interval_s: float, t0: float) -> None:
        super().__init__(daemon=True)
        self.app, self.interval_s, self.t0 = app, interval_s, t0
        self.samples: list[dict[str, Any]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        from ray import serve

        while not self.stop_event.is_set():
            t = time.perf_counter() - self.t0
            try:
                deps = serve.status().applications[self.app].deployments
            except Exception:  # a status call can fail transiently while replicas churn
                deps = {}
            running = {n: _count(d.replica_states, "RUNNING") for n, d in deps.items()}
            starting = {n: _count(d.replica_states, "STARTING") for n, d in deps.items()}
            if running:
                self.samples.append({"t_s": round(t, 2), "running": running, "starting": starting})
            self.stop_event.wait(self.interval_s)


def _count(states: dict[Any, int], name: str) -> int:
    return sum(n for s, n in states.items() if str(getattr(s, "value", s)) == name)


def run_step_load(url: str, args: argparse.Namespace) -> Any:
    from loadtest.cli import run_async
    from loadtest.config import LoadConfig, parse_profile
    from loadtest.runner import run_load

    profile = parse_profile(args.profile)
    cfg = LoadConfig(
        url=url,
        mode="open",
        duration_s=profile.duration_s,
        max_requests=100_000,
        profile=profile,
        max_tokens=args.max_tokens,
        timeout_s=120.0,
        seed=args.seed,
        spend=False,
        serve_status_url=None,  # read in-process by ReplicaWatch
    )
    return run_async(run_load(cfg, math_workload(), progress=sys.stderr))


def timeline(result: Any, bucket_s: float, end_s: float) -> list[dict[str, Any]]:
    """Per bucket of request start time: count, errors, p50/p99 latency."""
    from loadtest.stats import percentile

    out = []
    t = 0.0
    while t < end_s:
        recs = [r for r in result.records if t <= r.start_s < t + bucket_s]
        ok = [r.latency_s * 1000 for r in recs if r.ok]
        p50, p99 = percentile(ok, 50), percentile(ok, 99)
        out.append(
            {
                "t_s": t,
                "requests": len(recs),
                "errors": len(recs) - len(ok),
                "p50_ms": None if p50 is None else round(p50, 1),
                "p99_ms": None if p99 is None else round(p99, 1),
            }
        )
        t += bucket_s
    return out


def replicas_at(samples: list[dict[str, Any]], t: float) -> dict[str, int]:
    before = [s for s in samples if s["t_s"] <= t]
    return before[-1]["running"] if before else {}


def summarize(samples: list[dict[str, Any]], result: Any) -> dict[str, Any]:
    per: dict[str, Any] = {}
    for name in (f"expert-{e}" for e in EXPERTS):
        counts = [s["running"].get(name, 0) for s in samples]
        peak_t = next((s["t_s"] for s in samples if s["running"].get(name, 0) == max(counts)), None)
        per[name] = {"min": min(counts), "max": max(counts), "end": counts[-1], "peak_at_s": peak_t}
    ok = sum(r.ok for r in result.records)
    math = "expert-math-tiny"
    peak = per[math]["peak_at_s"] or 0.0
    back = next(
        (s["t_s"] for s in samples if s["t_s"] > peak and s["running"].get(math, 0) == 1), None
    )
    first_up = next((s["t_s"] for s in samples if s["running"].get(math, 0) > 1), None)
    per[math].update(first_upscale_at_s=first_up, back_to_min_at_s=back)
    return {
        "deployments": per,
        "requests": len(result.records),
        "ok": ok,
        "errors": len(result.records) - ok,
        "routed_to": _mix(result.records),
    }


def _mix(records: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        if r.ok:
            out[r.expert or "-"] = out.get(r.expert or "-", 0) + 1
    return out


def write_plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    samples = report["replica_samples"]
    for i, name in enumerate(f"expert-{e}" for e in EXPERTS):
        ts = [s["t_s"] for s in samples]
        nudge = 0.04 * (i - 1)  # keep lines at the same count apart
        counts = [s["running"].get(name, 0) + nudge for s in samples]
        ax1.step(ts, counts, where="post", label=name)
    ax1.set_ylabel("running replicas")
    ax1.set_ylim(0, report["settings"]["max_replicas"] + 0.5)
    ax1.legend(fontsize=8)
    rate = ax1.twinx()
    tl = report["timeline"]
    rate.bar(
        [b["t_s"] for b in tl],
        [b["requests"] / report["settings"]["bucket_s"] for b in tl],
        width=report["settings"]["bucket_s"],
        align="edge",
        alpha=0.15,
        color="grey",
    )
    rate.set_ylabel("offered RPS (bars)")
    pts = [(b["t_s"] + report["settings"]["bucket_s"] / 2, b["p99_ms"]) for b in tl if b["p99_ms"]]
    ax2.plot([t for t, _ in pts], [v / 1000 for _, v in pts], marker=".", label="p99")
    p50 = [(b["t_s"] + report["settings"]["bucket_s"] / 2, b["p50_ms"]) for b in tl if b["p50_ms"]]
    ax2.plot([t for t, _ in p50], [v / 1000 for _, v in p50], marker=".", label="p50")
    ax2.set_ylabel("latency (s), by request start")
    ax2.set_xlabel("seconds")
    ax2.legend(fontsize=8)
    fig.suptitle(f"step load on maths: {report['settings']['profile']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_table(report: dict[str, Any]) -> None:
    names = [f"expert-{e}" for e in EXPERTS]
    print(
        f"\n{'t (s)':>6} {'req':>5} {'err':>4} {'p50 ms':>8} {'p99 ms':>8}  "
        + " ".join(f"{n.removeprefix('expert-'):>13}" for n in names)
    )
    for b in report["timeline"]:
        reps = replicas_at(report["replica_samples"], b["t_s"] + report["settings"]["bucket_s"])
        print(
            f"{b['t_s']:>6.0f} {b['requests']:>5} {b['errors']:>4} {b['p50_ms'] or '-':>8} "
            f"{b['p99_ms'] or '-':>8}  " + " ".join(f"{reps.get(n, 0):>13}" for n in names)
        )
    s = report["summary"]
    print(f"\n{s['requests']} requests, {s['errors']} errors; routed {s['routed_to']}")
    for name, d in s["deployments"].items():
        print(f"  {name:<20} replicas min {d['min']} max {d['max']} end {d['end']}")


def start(work: Path, args: argparse.Namespace) -> tuple[str, Any]:
    from loadtest.gateways import free_port
    from router.config import parse_policy
    from router.finance.redis_server import EmbeddedRedis
    from router.serving.server import start_gateway
    from tests.unit.test_experts_tune_tiny import build_tiny_llama

    tiny = build_tiny_llama(work / "tiny")
    config = parse_policy(demo_policy(tiny, args), "autoscaling-demo.yaml")
    redis = EmbeddedRedis(work / "redis")
    redis_url = redis.start()
    os.environ["SLM_ROUTER_SPOOL_DIR"] = str(work / "spool")
    return start_gateway(config, "127.0.0.1", free_port(), redis_url), redis


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="step:1@20,5@80,1@40", help="loadtest step profile")
    p.add_argument("--tail-s", type=float, default=60.0, help="watch replicas after the load")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--max-replicas", type=int, default=3)
    p.add_argument("--upscale-delay-s", type=float, default=2.0)
    p.add_argument("--downscale-delay-s", type=float, default=10.0)
    p.add_argument("--bucket-s", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench-out/autoscaling"))
    p.add_argument("--replot", type=Path, help="only redraw the PNG from an autoscaling.json")
    args = p.parse_args(argv)
    if args.replot:
        write_plot(json.loads(args.replot.read_text()), args.replot.with_suffix(".png"))
        return 0
    from router.serving.app import APP_NAME
    from router.serving.server import stop_gateway, wait_ready

    work = Path(tempfile.mkdtemp(prefix="autoscale-"))
    t_start = time.monotonic()
    url, redis = start(work, args)
    try:
        wait_ready(url, timeout_s=240, poll_s=1)
        startup_s = time.monotonic() - t_start
        t0 = time.perf_counter()
        watch = ReplicaWatch(APP_NAME, 1.0, t0)
        watch.start()
        result = run_step_load(url, args)
        load_end = time.perf_counter() - t0
        time.sleep(args.tail_s)
        watch.stop_event.set()
        watch.join()
    finally:
        stop_gateway()
        redis.stop()
    report: dict[str, Any] = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "startup_s": round(startup_s, 1),
        "load_end_s": round(load_end, 1),
        "summary": summarize(watch.samples, result),
        # Through the tail too: replicas keep changing after the last request.
        "timeline": timeline(result, args.bucket_s, watch.samples[-1]["t_s"]),
        "replica_samples": watch.samples,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_end": os.getloadavg(),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "autoscaling.json").write_text(json.dumps(report, indent=1))
    write_plot(report, args.out / "autoscaling.png")
    print_table(report)
    print(f"wrote {args.out / 'autoscaling.json'}, {args.out / 'autoscaling.png'}")
    d = report["summary"]["deployments"]
    grew = d["expert-math-tiny"]["max"] > 1
    others_flat = all(d[f"expert-{e}"]["max"] == 1 for e in EXPERTS[1:])
    return 0 if grew and others_flat else 1


if __name__ == "__main__":
    raise SystemExit(main())
