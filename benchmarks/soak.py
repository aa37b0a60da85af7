"""Soak: N minutes of mixed load against a gateway this script starts; RSS of every process.

The gateway runs the shipped default policy's routes and classifier, with fake experts (in the
ingress, a few ms of delay each) and one tiny random-weight Llama built here (`backend: local`, its
own Serve deployment) behind the maths route. Two open-loop streams run side by side (plain JSON
and SSE), over the load generator's mixed-domain workload. Every `--sample-s` seconds the RSS of
each process the driver started (Serve controller, HTTP proxy, ingress, expert replica, redis,
Ray's own daemons) is read from /proc through psutil.

Growth per process = median RSS over the last minute / median RSS over the first minute after
the warm-up - 1. Target: every gateway process within 10 %, and zero errors.

    nice -n 10 python benchmarks/soak.py --minutes 10 --out bench-out/soak
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
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

# Processes whose growth the target applies to (Ray's own daemons are reported, not judged).
GATEWAY_ROLES = ("controller", "proxy", "ingress", "expert", "redis")
# Redis holds the ledger: one record per request, kept for the ledger's retention (400 days),
# so its RSS grows with requests by design. It is reported in bytes per request, not judged flat.
FLAT_ROLES = ("controller", "proxy", "ingress", "expert")


def soak_policy(tiny: Path) -> str:
    """The default policy's classifier and routes; fakes everywhere but maths (tiny local)."""
    doc = yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())
    doc["experts"] = {
        "general-fake": {"backend": "fake", "delay_ms": 5},
        "code-fake": {"backend": "fake", "delay_ms": 10},
        "tiny": {
            "backend": "local",
            "model": str(tiny),
            "max_tokens_default": 16,
            "replicas": {"min": 1, "max": 1},
            "resources": {"num_cpus": 0.1},
        },
    }
    for route in doc["routing"]["routes"]:
        route["experts"] = {"code": ["code-fake"], "math": ["tiny"]}.get(
            route["domain"], ["general-fake"]
        )
    doc["routing"]["fallback"] = "general-fake"
    doc["gateway"] = {"max_ongoing_requests": 64}
    return yaml.safe_dump(doc, sort_keys=False)


# ---- processes and RSS ----------------------------------------------------------------------


def role_of(cmdline: list[str], name: str) -> tuple[str, str]:
    """(role, label) from a process's title: Ray names its workers `ray::<actor>`."""
    title = " ".join(cmdline) if cmdline else name
    if title.startswith("ray::"):
        # A busy worker's title also names the method it runs: `ray::Actor.method`.
        actor = title.split()[0].removeprefix("ray::").split(".")[0]
        if actor.startswith("ServeController"):
            return "controller", "controller"
        if actor.startswith("ProxyActor"):
            return "proxy", "proxy"
        if actor.startswith("ServeReplica:"):
            deployment = actor.split(":")[-1]
            return ("expert" if deployment.startswith("expert-") else "ingress"), deployment
        return "ray", actor
    if "redis-server" in title:
        return "redis", "redis"
    for daemon in ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py"):
        if daemon in title:
            return "ray", daemon.removesuffix(".py")
    return "other", name


def sample_rss() -> dict[str, dict[str, Any]]:
    """RSS (MiB) of this driver's descendants, keyed `label[pid]`."""
    import psutil

    out: dict[str, dict[str, Any]] = {}
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            role, label = role_of(proc.cmdline(), proc.name())
            rss = proc.memory_info().rss / 2**20
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        out[f"{label}[{proc.pid}]"] = {"role": role, "rss_mib": round(rss, 1)}
    return out


class Sampler(threading.Thread):
    def __init__(self, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.samples: list[tuple[float, dict[str, dict[str, Any]]]] = []
        self.stop_event = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.samples.append((time.monotonic() - self.t0, sample_rss()))
            self.stop_event.wait(self.interval_s)


def growth(
    samples: list[tuple[float, dict[str, dict[str, Any]]]], warmup_s: float, window_s: float
) -> dict[str, dict[str, Any]]:
    """Per process: median RSS over the first window after warm-up (or after the process
    appeared, for a replacement), over the last window of its life, and the growth between.

    `restarted` marks a process that appeared after the warm-up or was gone before the end
    (Ray replaces a killed replica with a new process).
    """
    end = samples[-1][0]
    out: dict[str, dict[str, Any]] = {}
    keys = {k for _, snap in samples for k in snap}
    for key in sorted(keys):
        series = [(t, snap[key]) for t, snap in samples if key in snap]
        born, died = series[0][0], series[-1][0]
        start = max(warmup_s, born)
        first = [v["rss_mib"] for t, v in series if start <= t < start + window_s]
        last = [v["rss_mib"] for t, v in series if t >= died - window_s]
        if not first or not last or died - start < 2 * window_s:
            continue  # too short-lived to say anything about growth
        a, b = statistics.median(first), statistics.median(last)
        out[key] = {
            "role": series[0][1]["role"],
            "after_warmup_mib": round(a, 1),
            "end_mib": round(b, 1),
            "max_mib": max(v["rss_mib"] for _, v in series),
            "growth_pct": round((b / a - 1) * 100, 2) if a else None,
            "lived_s": [round(born, 1), round(died, 1)],
            "restarted": born > warmup_s or died < end - window_s / 2,
        }
    return out


def restarts(samples: list[tuple[float, dict[str, dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Gateway processes that appeared or vanished between samples, with when."""
    events: list[dict[str, Any]] = []
    for (_, prev), (t, snap) in itertools.pairwise(samples):
        for key in snap.keys() - prev.keys():
            if snap[key]["role"] in GATEWAY_ROLES:
                events.append({"t_s": round(t, 1), "started": key})
        for key in prev.keys() - snap.keys():
            if prev[key]["role"] in GATEWAY_ROLES:
                events.append({"t_s": round(t, 1), "gone": key})
    return events


# ---- load ------------------------------------------------------------------------------------


def run_mixed_load(url: str, seconds: float, json_rps: float, sse_rps: float) -> list[Any]:
    """Two open-loop Poisson streams (JSON and SSE) over the built-in mixed workload."""
    from loadtest.cli import run_async
    from loadtest.config import LoadConfig, constant_profile
    from loadtest.runner import run_load
    from loadtest.workload import builtin_workload

    def cfg(rps: float, stream: bool, seed: int) -> LoadConfig:
        return LoadConfig(
            url=url,
            mode="open",
            duration_s=seconds,
            max_requests=1_000_000,
            profile=constant_profile(rps, seconds),
            stream=stream,
            max_tokens=16,
            timeout_s=30.0,
            seed=seed,
            spend=False,
            serve_status_url=None,
        )

    async def both() -> list[Any]:
        items = builtin_workload()
        return list(
            await asyncio.gather(
                run_load(cfg(json_rps, False, 1), items, progress=None),
                run_load(cfg(sse_rps, True, 2), items, progress=sys.stderr),
            )
        )

    return run_async(both())


def load_summary(results: list[Any], seconds: float) -> dict[str, Any]:
    from loadtest.stats import error_counts, latency_summary, routing_mix

    records = [r for res in results for r in res.records]
    ok = [r for r in records if r.ok]
    minutes: list[dict[str, Any]] = []
    for m in range(int(seconds // 60) + 1):
        in_min = [r for r in records if m * 60 <= r.start_s < (m + 1) * 60]
        if in_min:
            lat = latency_summary([r.latency_s for r in in_min if r.ok])
            minutes.append(
                {
                    "minute": m,
                    "requests": len(in_min),
                    "errors": sum(not r.ok for r in in_min),
                    "p50_ms": lat["p50_ms"],
                    "p99_ms": lat["p99_ms"],
                }
            )
    return {
        "requests": len(records),
        "ok": len(ok),
        "errors": len(records) - len(ok),
        "errors_by_type": error_counts(records),
        "abandoned": sum(res.abandoned for res in results),
        "achieved_rps": round(len(records) / seconds, 2),
        "latency": latency_summary([r.latency_s for r in ok]),
        "by_expert": routing_mix(records, "expert"),
        "by_domain": routing_mix(records, "domain"),
        "per_minute": minutes,
    }


def ledger_requests(url: str) -> int | None:
    import httpx

    from loadtest.probes import parse_spend

    try:
        resp = httpx.get(url + "/v1/spend", timeout=5.0, trust_env=False)
        return parse_spend(resp.json()).requests if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


# ---- main ------------------------------------------------------------------------------------


def start(work: Path, port: int) -> tuple[str, Any]:
    from router.config import parse_policy
    from router.finance.redis_server import EmbeddedRedis
    from router.serving.server import start_gateway
    from tests.unit.test_experts_tune_tiny import build_tiny_llama

    tiny = build_tiny_llama(work / "tiny")
    config = parse_policy(soak_policy(tiny), "soak-policy.yaml")
    redis = EmbeddedRedis(work / "redis")
    redis_url = redis.start()
    os.environ["SLM_ROUTER_SPOOL_DIR"] = str(work / "spool")
    return start_gateway(config, "127.0.0.1", port, redis_url), redis


def print_table(report: dict[str, Any]) -> None:
    print(
        f"\n{'process':<34} {'role':<10} {'after warm-up':>13} {'end':>9} {'max':>9} {'growth':>8}"
    )
    for key, g in sorted(report["rss"].items(), key=lambda kv: (kv[1]["role"], kv[0])):
        if g["role"] == "other":
            continue
        print(
            f"{key:<34} {g['role']:<10} {g['after_warmup_mib']:>10.1f} MiB {g['end_mib']:>5.1f} MiB"
            f" {g['max_mib']:>5.1f} MiB {g['growth_pct']:>+7.2f}%"
        )
    load = report["load"]
    lat = load["latency"]
    print(
        f"\n{load['requests']} requests, {load['errors']} errors {load['errors_by_type'] or ''}, "
        f"{load['achieved_rps']} RPS; p50 {lat['p50_ms']} ms p99 {lat['p99_ms']} ms; "
        f"ledger delta {report['ledger_requests_delta']}"
    )
    print(f"redis (ledger data) bytes per request served: {report['redis_bytes_per_request']}")
    v = report["verdict"]
    for ev in report["process_events"]:
        print(
            f"  at {ev['t_s']:>6.1f}s " + ", ".join(f"{k} {v}" for k, v in ev.items() if k != "t_s")
        )
    print(
        f"gateway max growth {v['max_gateway_growth_pct']}% (target <= {v['target_pct']}%), "
        f"errors {v['errors']}: {'PASS' if v['pass'] else 'FAIL'}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--json-rps", type=float, default=6.0, help="open-loop JSON requests/s")
    p.add_argument("--sse-rps", type=float, default=3.0, help="open-loop streaming requests/s")
    p.add_argument("--sample-s", type=float, default=5.0, help="seconds between RSS samples")
    p.add_argument("--warmup-s", type=float, default=120.0, help="excluded from the growth")
    p.add_argument("--window-s", type=float, default=60.0, help="median window at each end")
    p.add_argument("--target-pct", type=float, default=10.0)
    p.add_argument("--port", type=int, default=0, help="gateway port (default: a free one)")
    p.add_argument("--out", type=Path, default=Path("bench-out/soak"))
    p.add_argument("--from-json", type=Path, help="only re-analyse a soak.json (same --out)")
    args = p.parse_args(argv)
    if args.from_json:
        report = analyse(json.loads(args.from_json.read_text()))
        (args.out / "soak.json").write_text(json.dumps(report, indent=1))
        write_plot(report, args.out / "soak_rss.png")
        print_table(report)
        return 0 if report["verdict"]["pass"] else 1
    from loadtest.gateways import free_port
    from router.serving.server import stop_gateway, wait_ready

    seconds = args.minutes * 60
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    t0 = time.monotonic()
    url, redis = start(work, args.port or free_port())
    try:
        wait_ready(url, timeout_s=180, poll_s=1)
        startup_s = time.monotonic() - t0
        before = ledger_requests(url)
        sampler = Sampler(args.sample_s)
        sampler.start()
        results = run_mixed_load(url, seconds, args.json_rps, args.sse_rps)
        time.sleep(3)  # ledger writes trail the answers
        after = ledger_requests(url)
        sampler.stop_event.set()
        sampler.join()
    finally:
        stop_gateway()
        redis.stop()
    report = analyse(
        {
            "settings": vars(args) | {"out": str(args.out)},
            "startup_s": round(startup_s, 1),
            "load": load_summary(results, seconds),
            "ledger_requests_delta": None if before is None or after is None else after - before,
            "rss_samples": [{"t_s": round(t, 1), "rss_mib": snap} for t, snap in sampler.samples],
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "loadavg_end": os.getloadavg(),
            },
        }
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(report, indent=1))
    write_plot(report, args.out / "soak_rss.png")
    print_table(report)
    print(f"wrote {args.out / 'soak.json'}, {args.out / 'soak_rss.png'}")
    return 0 if report["verdict"]["pass"] else 1


def analyse(report: dict[str, Any]) -> dict[str, Any]:
    """Growth, process events and the verdict from the raw samples (also for --from-json)."""
    st = report["settings"]
    samples = [(x["t_s"], x["rss_mib"]) for x in report["rss_samples"]]
    rss = growth(samples, st["warmup_s"], st["window_s"])
    flat = [g["growth_pct"] for g in rss.values() if g["role"] in FLAT_ROLES]
    worst = max(flat, default=0.0)
    redis = next((g for g in rss.values() if g["role"] == "redis"), None)
    served = report["load"]["ok"]
    # Requests served between the two windows (the run is a constant rate).
    between = served * (1 - (st["warmup_s"] + st["window_s"]) / (st["minutes"] * 60))
    errors = report["load"]["errors"]
    report |= {
        "rss": rss,
        "process_events": restarts(samples),
        "redis_bytes_per_request": None
        if redis is None or between <= 0
        else round((redis["end_mib"] - redis["after_warmup_mib"]) * 2**20 / between),
        "verdict": {
            "max_gateway_growth_pct": worst,
            "target_pct": st["target_pct"],
            "errors": errors,
            "pass": worst <= st["target_pct"] and errors == 0,
        },
    }
    return report


def write_plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    keys = [
        k
        for k, g in report["rss"].items()
        if g["role"] in GATEWAY_ROLES or k.startswith(("gcs_server", "raylet"))
    ]
    for key in keys:
        pts = [
            (s["t_s"], s["rss_mib"][key]["rss_mib"])
            for s in report["rss_samples"]
            if key in s["rss_mib"]
        ]
        ax.plot([t / 60 for t, _ in pts], [v for _, v in pts], label=key)
    ax.axvline(report["settings"]["warmup_s"] / 60, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title("RSS per process under mixed load")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
