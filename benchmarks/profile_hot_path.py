"""Where the ingress spends a request: the FastAPI app over instant fake experts, in-process.

The app is `router.serving.http.api.create_api` over the AppState that
`router.serving.wiring.build_state` builds from a policy (the shipped default's classifier
and routes, every expert a fake that answers at once), driven through httpx's ASGITransport: no
sockets, no Serve, so what is left is our code and the libraries it calls (FastAPI/pydantic
validation, accounting and telemetry, the classifier, the policy engine, JSON). Serve's own
proxy + handle cost is measured separately
(`python -m loadtest.overhead`).

Three readings, each the median over `--runs`:
  * per request, sequential: wall time of one POST /v1/chat/completions (JSON and SSE);
  * the parts alone: classify (the in-ingress classifier, a worker thread), decide (the pure
    engine), the request body's validation;
  * a cProfile of the event-loop thread over `--requests` requests, grouped by package.

    python benchmarks/profile_hot_path.py --out bench-out/profile
    python benchmarks/profile_hot_path.py --py-spy   # also sample all threads with py-spy
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(_k, _v)

PROMPTS = (
    "write a python function that reverses a list",
    "what is 17 times 23",
    "what are the symptoms of the flu",
    "how does compound interest work",
    "write a short poem about autumn",
    "my docker container exits immediately, why",
)

# Package of a profiled function, from its file path (first match wins).
CATEGORIES = (
    ("pydantic", ("pydantic",)),
    ("fastapi/starlette", ("fastapi", "starlette")),
    ("httpx (test client)", ("httpx", "httpcore", "anyio")),
    ("opentelemetry", ("opentelemetry",)),
    (
        "classifier (torch/numpy/tokenizers)",
        (
            "classifiers",
            "torch",
            "numpy",
            "tokenizers",
            "transformers",
            "sentence_transformers",
            "sklearn",
        ),
    ),
    ("policies", ("/policies/",)),
    (
        "router.serving.accounting/telemetry",
        ("router/serving/accounting", "router/serving/telemetry", "router/finance/costs"),
    ),
    ("router (other)", ("/router/",)),
    ("experts (fake)", ("/experts/",)),
    ("ray serve", ("ray/serve",)),
    ("ray core / grpc", ("ray/", "_raylet", "grpc")),
    ("uvicorn/h11", ("uvicorn", "h11", "httptools")),
    ("json", ("json",)),
    ("asyncio", ("asyncio",)),
    ("logging", ("logging",)),
    ("uuid/random", ("uuid", "random")),
)


def policy_text() -> str:
    doc = yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())
    doc["experts"] = {"instant": {"backend": "fake", "reply": "ok"}}
    for route in doc["routing"]["routes"]:
        route["experts"] = ["instant"]
    doc["routing"]["fallback"] = "instant"
    return yaml.safe_dump(doc, sort_keys=False)


def build_app() -> tuple[Any, Any]:
    from router.config import parse_policy
    from router.serving.http.api import create_api
    from router.serving.wiring import build_state

    config = parse_policy(policy_text(), "profile-policy.yaml")
    state = build_state(config, None, {}, None)
    return create_api(state), state.gateway


_SEQ = iter(range(10**9))


def body(i: int, stream: bool = False) -> dict[str, Any]:
    # A unique suffix: the encoder caches embeddings, and real prompts rarely repeat.
    text = f"{PROMPTS[i % len(PROMPTS)]} (request {next(_SEQ)})"
    out: dict[str, Any] = {
        "model": "auto",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 16,
    }
    if stream:
        out["stream"] = True
    return out


async def one(client: Any, i: int, stream: bool) -> float:
    t = time.perf_counter()
    resp = await client.post("/v1/chat/completions", json=body(i, stream))
    if resp.status_code != 200:
        raise RuntimeError(f"{resp.status_code}: {resp.text[:300]}")
    return time.perf_counter() - t


async def sequential(client: Any, n: int, stream: bool) -> list[float]:
    return [await one(client, i, stream) for i in range(n)]


async def parts(gw: Any, n: int) -> dict[str, list[float]]:
    """The pieces alone, with the same inputs the request path hands them."""
    from router.serving.openai_types import ChatCompletionRequest

    out: dict[str, list[float]] = {"validate": [], "classify": [], "decide": []}
    for i in range(n):
        raw = body(i)
        t = time.perf_counter()
        req = ChatCompletionRequest.model_validate(raw)
        out["validate"].append(time.perf_counter() - t)
        t = time.perf_counter()
        routed = await gw.service.route(req, request_id=f"r{i}")
        total = time.perf_counter() - t
        out["classify"].append(routed.classify_s)
        out["decide"].append(total - routed.classify_s)
    return out


def categorize(stats: pstats.Stats) -> dict[str, float]:
    """Own time (tottime) per package, in seconds."""
    totals: Counter[str] = Counter()
    for (path, _line, _fn), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        name = "other"
        for cat, needles in CATEGORIES:
            if any(n in path for n in needles):
                name = cat
                break
        if path == "~":  # builtins (e.g. json's C encoder, dict ops): name them by function
            name = "builtins"
        totals[name] += tt
    return dict(totals.most_common())


def top_functions(stats: pstats.Stats, n: int, key: str) -> list[dict[str, Any]]:
    rows = []
    for (path, line, fn), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(path).name}:{line}:{fn}",
                "path": path,
                "calls": nc,
                "tottime_s": tt,
                "cumtime_s": ct,
            }
        )
    rows.sort(key=lambda r: r[key], reverse=True)
    return rows[:n]


async def profiled(client: Any, n: int) -> pstats.Stats:
    prof = cProfile.Profile()
    prof.enable()
    for i in range(n):
        await one(client, i, i % 2 == 1)
    prof.disable()
    return pstats.Stats(prof)


def py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("py-spy not found: skipping", file=sys.stderr)
        return None
    cmd = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--rate",
        "250",
        "--duration",
        str(int(seconds)),
        "--format",
        "raw",
        "--output",
        str(out),
        "--threads",
        "--nonblocking",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def collapse_by_leaf(raw: Path) -> dict[str, int]:
    """Samples per package of the innermost frame, from py-spy's collapsed stacks."""
    totals: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        leaf = stack.split(";")[-1]
        name = "other"
        for cat, needles in CATEGORIES:
            if any(n in leaf for n in needles):
                name = cat
                break
        totals[name] += int(count)
    return dict(totals.most_common())


def attach(pid: int, seconds: float, out: Path) -> dict[str, Any]:
    """py-spy on a running process (e.g. a Serve ingress replica under load)."""
    raw = out / f"stacks-{pid}.txt"
    spy = py_spy(pid, seconds, raw)
    if spy is None:
        return {"error": "py-spy not found"}
    _, err = spy.communicate(timeout=seconds + 60)
    if not raw.exists():
        return {"error": err.decode(errors="replace")[-500:]}
    leaf = collapse_by_leaf(raw)
    n = sum(leaf.values()) or 1
    return {
        "pid": pid,
        "samples": n,
        "leaf_pct": {k: round(v / n * 100, 1) for k, v in leaf.items()},
    }


def _cpu_by_role() -> dict[str, float]:
    """CPU seconds (user + system) of this driver's descendants, summed per Serve role."""
    import psutil

    out: dict[str, float] = {}
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            title = " ".join(proc.cmdline()) or proc.name()
            t = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        role = "other ray/redis"
        for needle, name in (
            ("ServeReplica", "ingress replica"),
            ("ProxyActor", "http proxy"),
            ("ServeController", "serve controller"),
        ):
            if needle in title:
                role = name
        out[role] = out.get(role, 0.0) + t.user + t.system
    return out


def serve_cpu(args: argparse.Namespace) -> dict[str, Any]:
    """The same policy on a real Serve app: wall latency over HTTP and CPU ms per request per
    process (the load generator is this process, measured apart)."""
    import httpx

    from loadtest.gateways import free_port
    from router.config import parse_policy
    from router.finance.redis_server import EmbeddedRedis
    from router.serving.server import start_gateway, stop_gateway

    work = Path(tempfile.mkdtemp(prefix="profile-serve-"))
    redis = EmbeddedRedis(work / "redis")
    os.environ["SLM_ROUTER_SPOOL_DIR"] = str(work / "spool")
    config = parse_policy(policy_text(), "profile-policy.yaml")
    url = start_gateway(config, "127.0.0.1", free_port(), redis.start())
    try:
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            for i in range(args.warmup):
                client.post("/v1/chat/completions", json=body(i)).raise_for_status()
            walls: list[float] = []
            before, me0 = _cpu_by_role(), time.process_time()
            for i in range(args.requests):
                t = time.perf_counter()
                client.post("/v1/chat/completions", json=body(i)).raise_for_status()
                walls.append(time.perf_counter() - t)
            after, me1 = _cpu_by_role(), time.process_time()
    finally:
        stop_gateway()
        redis.stop()
    n = args.requests
    cpu = {k: round((after.get(k, 0.0) - before.get(k, 0.0)) / n * 1000, 3) for k in after}
    cpu["load generator (this process)"] = round((me1 - me0) / n * 1000, 3)
    return {
        "requests": n,
        "wall_p50_ms": median_ms(walls),
        "wall_p99_ms": p99_ms(walls),
        "cpu_ms_per_request": cpu,
    }


def median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 3)


def p99_ms(values: list[float]) -> float:
    xs = sorted(values)
    return round(xs[min(len(xs) - 1, int(0.99 * (len(xs) - 1)))] * 1000, 3)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    app, gw = build_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        await sequential(client, args.warmup, False)
        await sequential(client, args.warmup // 2, True)
        runs: dict[str, list[float]] = {"json": [], "sse": []}
        for _ in range(args.runs):
            runs["json"].append(statistics.median(await sequential(client, args.requests, False)))
            runs["sse"].append(statistics.median(await sequential(client, args.requests, True)))
        lat = await sequential(client, args.requests, False)
        pieces = await parts(gw, args.requests)
        spy, spy_out = None, Path(tempfile.mkdtemp()) / "stacks.txt"
        if args.py_spy:
            spy = py_spy(os.getpid(), args.spy_seconds, spy_out)
            time.sleep(1.0)
            t_end = time.monotonic() + args.spy_seconds - 1.5
            i = 0
            while time.monotonic() < t_end:
                await one(client, i, i % 2 == 1)
                i += 1
        stats = await profiled(client, args.requests)
    result: dict[str, Any] = {
        "json_median_ms": round(statistics.median(runs["json"]) * 1000, 3),
        "sse_median_ms": round(statistics.median(runs["sse"]) * 1000, 3),
        "json_run_medians_ms": [round(v * 1000, 3) for v in runs["json"]],
        "sse_run_medians_ms": [round(v * 1000, 3) for v in runs["sse"]],
        "json_p99_ms": p99_ms(lat),
        "parts_median_ms": {k: median_ms(v) for k, v in pieces.items()},
    }
    cats = categorize(stats)
    own = sum(cats.values())
    result["cprofile"] = {
        "requests": args.requests,
        "own_time_per_request_ms": round(own / args.requests * 1000, 3),
        "by_package_pct": {k: round(v / own * 100, 1) for k, v in cats.items()},
        "top_tottime": top_functions(stats, 25, "tottime_s"),
        "top_cumtime": top_functions(stats, 40, "cumtime_s"),
    }
    if spy is not None:
        _, err = spy.communicate(timeout=args.spy_seconds + 30)
        if spy_out.exists():
            leaf = collapse_by_leaf(spy_out)
            n = sum(leaf.values()) or 1
            result["py_spy_leaf_pct"] = {k: round(v / n * 100, 1) for k, v in leaf.items()}
            result["py_spy_samples"] = n
        else:
            result["py_spy_error"] = err.decode(errors="replace")[-500:]
    return result


def print_report(r: dict[str, Any]) -> None:
    print(
        f"per request (sequential, in-process, median of medians): JSON {r['json_median_ms']} ms"
        f" (p99 {r['json_p99_ms']} ms), SSE {r['sse_median_ms']} ms"
    )
    print(
        "parts alone (median ms): " + ", ".join(f"{k} {v}" for k, v in r["parts_median_ms"].items())
    )
    cp = r["cprofile"]
    print(
        f"\ncProfile, event-loop thread: {cp['own_time_per_request_ms']} ms own time per request"
        " (profiler overhead included)"
    )
    print(f"{'package':<38} {'% own time':>10}")
    for k, v in cp["by_package_pct"].items():
        print(f"{k:<38} {v:>10.1f}")
    print(f"\n{'top own time':<70} {'calls':>7} {'tottime ms':>10}")
    for row in cp["top_tottime"][:15]:
        print(f"{row['function'][:70]:<70} {row['calls']:>7} {row['tottime_s'] * 1000:>10.1f}")
    if "py_spy_leaf_pct" in r:
        print(f"\npy-spy, all threads, innermost frame ({r['py_spy_samples']} samples):")
        for k, v in r["py_spy_leaf_pct"].items():
            print(f"  {k:<38} {v:>6.1f}%")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=300, help="requests per run")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--py-spy", action="store_true", help="also sample every thread with py-spy")
    p.add_argument("--spy-seconds", type=float, default=15.0)
    p.add_argument("--label", default="", help="stored in the JSON (e.g. before/after)")
    p.add_argument("--out", type=Path, default=Path("bench-out/profile"))
    p.add_argument("--serve", action="store_true", help="run on Serve: CPU ms per process")
    p.add_argument("--attach", type=int, help="only py-spy this PID (a Serve ingress replica)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.attach:
        spied = attach(args.attach, args.spy_seconds, args.out)
        print(json.dumps(spied, indent=1))
        (args.out / f"attach-{args.attach}.json").write_text(json.dumps(spied, indent=1))
        return 0 if "error" not in spied else 1
    if args.serve:
        served = serve_cpu(args)
        print(json.dumps(served, indent=1))
        (args.out / f"serve{'-' + args.label if args.label else ''}.json").write_text(
            json.dumps(served, indent=1)
        )
        return 0
    from loadtest.cli import run_async

    result = run_async(measure(args))
    result["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
    }
    print_report(result)
    name = f"profile{'-' + args.label if args.label else ''}.json"
    (args.out / name).write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
