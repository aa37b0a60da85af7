"""A policy apply under steady load: latency and failures before, during and after the roll.

Starts the gateway (Ray, Serve, embedded Redis) with two fake experts behind the examples
classifier, drives it with a closed loop of `--concurrency` clients sending chat requests, and
`--apply-at` seconds in applies a changed policy (one keyword override sends the load's prompts
to the other expert) through router.serving.reload.apply_config, the function `slm-router policy
apply` and `serve --watch` use. The roll window runs from the apply's start until the first
answer from the new policy's expert plus one second; requests are put in a phase by their start
time. Issue 14.4 / 17.1's target: zero failures and p99 below 1 s during the roll.

    python benchmarks/reload_under_load.py --out bench-out/reload
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
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

for _k, _v in {"HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}.items():
    os.environ.setdefault(_k, _v)

POLICY = """
version: 1
classifier: {{kind: examples, placement: ingress, oos_threshold: 0.3}}
experts:
  old-expert: {{backend: fake}}
  new-expert: {{backend: fake}}
routing:
  fallback: old-expert
  overrides: {overrides}
  routes:
    - domain: code
      experts: [old-expert]
      examples: [write a python function, fix this javascript bug, explain this SQL query]
gateway: {{replicas: {replicas}}}
"""
CHANGED = "[{name: zebra, expert: new-expert, keywords: [zebra]}]"


@dataclass
class Result:
    started: float
    latency_s: float
    status: int
    expert: str


class ClosedLoop:
    """`n` clients, each sending its next request as soon as the last one is answered."""

    def __init__(self, url: str, n: int, timeout_s: float) -> None:
        self.url, self.n, self.timeout_s = url, n, timeout_s
        self.results: list[Result] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(n)]

    def _client(self) -> None:
        body = {"model": "auto", "messages": [{"role": "user", "content": "zebra crossing"}]}
        with httpx.Client(timeout=self.timeout_s, trust_env=False) as client:
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    r = client.post(f"{self.url}/v1/chat/completions", json=body)
                    status = r.status_code
                    expert = r.headers.get("x-slm-router-expert", "")
                except httpx.HTTPError:
                    status, expert = 0, ""
                res = Result(t0, time.monotonic() - t0, status, expert)
                with self._lock:
                    self.results.append(res)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout_s + 5)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def summarise(results: list[Result]) -> dict[str, float]:
    lat = [r.latency_s for r in results]
    return {
        "requests": len(results),
        "failures": sum(r.status != 200 for r in results),
        "p50_s": pct(lat, 0.50),
        "p99_s": pct(lat, 0.99),
        "max_s": max(lat, default=float("nan")),
    }


def phases(results: list[Result], t_apply: float, t_end: float) -> dict[str, dict[str, float]]:
    return {
        "before": summarise([r for r in results if r.started < t_apply]),
        "during roll": summarise([r for r in results if t_apply <= r.started < t_end]),
        "after": summarise([r for r in results if r.started >= t_end]),
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    from loadtest.gateways import free_port
    from router.config import parse_policy
    from router.finance.redis_server import EmbeddedRedis
    from router.serving.reload import apply_config
    from router.serving.server import start_gateway, stop_gateway, wait_ready

    old = parse_policy(POLICY.format(overrides="[]", replicas=args.replicas), "old.yaml")
    new = parse_policy(POLICY.format(overrides=CHANGED, replicas=args.replicas), "new.yaml")
    work = Path(tempfile.mkdtemp(prefix="reload-bench-"))
    os.environ["SLM_ROUTER_SPOOL_DIR"] = str(work / "spool")
    redis = EmbeddedRedis(work / "redis")
    redis_url = redis.start()
    url = start_gateway(old, "127.0.0.1", free_port(), redis_url)
    try:
        wait_ready(url, timeout_s=120)
        load = ClosedLoop(url, args.concurrency, args.timeout_s)
        load.start()
        time.sleep(args.apply_at)
        t_apply = time.monotonic()
        apply_s = apply_config(new, redis_url)
        t_first_new = wait_for_new(load, t_apply, args.settle_timeout_s)
        t_end = t_first_new + 1.0
        time.sleep(max(0.0, args.after_s - (time.monotonic() - t_end)))
        load.stop()
    finally:
        stop_gateway()
        redis.stop()
    return {
        "apply_call_s": apply_s,
        "switch_s": t_first_new - t_apply,
        "phases": phases(load.results, t_apply, t_end),
    }


def wait_for_new(load: ClosedLoop, since: float, timeout_s: float) -> float:
    """Start time of the first request answered by the new policy's expert."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        new = [r.started for r in list(load.results) if r.started >= since and "new" in r.expert]
        if new:
            return min(new)
        time.sleep(0.2)
    raise TimeoutError(f"no answer from the new policy within {timeout_s}s")


def table(report: dict[str, object]) -> str:
    rows = [f"{'phase':<12} {'requests':>8} {'failures':>8} {'p50 s':>7} {'p99 s':>7} {'max s':>7}"]
    for name, s in report["phases"].items():  # type: ignore[attr-defined]
        rows.append(
            f"{name:<12} {s['requests']:>8} {s['failures']:>8} {s['p50_s']:>7.3f}"
            f" {s['p99_s']:>7.3f} {s['max_s']:>7.3f}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--replicas", type=int, default=1, help="ingress replicas")
    p.add_argument("--apply-at", type=float, default=8.0, help="seconds of load before the apply")
    p.add_argument("--after-s", type=float, default=8.0, help="seconds of load after the roll")
    p.add_argument("--timeout-s", type=float, default=60.0, help="per-request client timeout")
    p.add_argument("--settle-timeout-s", type=float, default=120.0)
    p.add_argument("--out", type=Path, default=Path("bench-out/reload"))
    args = p.parse_args(argv)
    report = run(args)
    report["meta"] = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "loadavg_at_end": os.getloadavg(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    print(table(report))
    print(f"apply call {report['apply_call_s']:.1f}s; new policy answering after "
          f"{report['switch_s']:.1f}s")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reload_under_load.json").write_text(json.dumps(report, indent=1, default=str))
    bad = report["phases"]["during roll"]  # type: ignore[index]
    return 0 if bad["failures"] == 0 and bad["p99_s"] < 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
