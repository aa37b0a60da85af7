"""`slm-router loadtest` / `python -m loadtest`: flags -> LoadConfig -> run -> report files."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from loadtest.config import (
    ConfigError,
    LoadConfig,
    check_base_url,
    check_side_url,
    constant_profile,
    parse_profile,
)
from loadtest.workload import WorkItem, builtin_workload, load_jsonl

T = TypeVar("T")
DEFAULT_SERVE_STATUS = "http://127.0.0.1:8265"
DESCRIPTION = (
    "Load an OpenAI-compatible gateway (closed or open loop, bounded in time and count) and "
    "write report.json, report.md and PNG plots."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--url", default="http://127.0.0.1:8000", help="gateway base URL (the only host loaded)")
    a(
        "--workload",
        default="builtin",
        help="JSONL of {prompt|messages, model?, domain?}, or 'builtin'",
    )
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--rate", type=float, help="open loop: Poisson arrivals at R requests/s")
    load.add_argument(
        "--concurrency", type=int, help="closed loop: C clients back to back (default 4)"
    )
    load.add_argument("--profile", help="open loop: 'step:RPS@S,RPS@S,...' or 'ramp:A-B@S,...'")
    a("--duration", type=float, help="seconds of load (default 30; a profile's own length)")
    a("--max-requests", type=int, default=10_000, help="stop after N requests (default 10000)")
    a("--stream", action="store_true", help="stream responses (TTFT; usage via include_usage)")
    a("--model", default="auto", help="model field for items that name none (default auto)")
    a("--max-tokens", type=int, default=64, help="max_tokens per request; 0 omits it")
    a(
        "--api-key",
        default=os.environ.get("SLM_ROUTER_API_KEY"),
        help="Bearer key (env SLM_ROUTER_API_KEY)",
    )
    a("--timeout", type=float, default=60.0, help="per-request timeout in seconds")
    a("--seed", type=int, default=0, help="seed for arrivals and prompt order")
    a(
        "--serve-status-url",
        default=DEFAULT_SERVE_STATUS,
        help="Ray dashboard for replica counts; 'none' skips",
    )
    a("--poll-interval", type=float, default=1.0, help="seconds between replica samples")
    a("--max-in-flight", type=int, default=512, help="open loop: shed arrivals beyond N in flight")
    a("--no-spend", action="store_true", help="do not read GET /v1/spend before and after")
    a("--out", type=Path, default=Path("bench-out/loadtest"), help="directory for report files")
    a("--quiet", action="store_true", help="no live progress line")


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    url = check_base_url(args.url)
    profile = None
    if args.profile:
        profile = parse_profile(args.profile)
    elif args.rate is not None:
        if args.rate <= 0:
            raise ConfigError("--rate must be positive")
        profile = constant_profile(args.rate, args.duration or 30.0)
    duration = args.duration or (profile.duration_s if profile else 30.0)
    status = args.serve_status_url
    return LoadConfig(
        url=url,
        mode="open" if profile else "closed",
        duration_s=duration,
        max_requests=args.max_requests,
        profile=profile,
        concurrency=0 if profile else (args.concurrency or 4),
        stream=args.stream,
        model=args.model,
        max_tokens=args.max_tokens or None,
        api_key=args.api_key,
        timeout_s=args.timeout,
        seed=args.seed,
        serve_status_url=None if status in (None, "", "none") else check_side_url(status, url),
        spend=not args.no_spend,
        poll_interval_s=args.poll_interval,
        max_in_flight=args.max_in_flight,
    )


def load_items(spec: str) -> tuple[list[WorkItem], str]:
    if spec == "builtin":
        return builtin_workload(), "builtin"
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"workload file not found: {spec}")
    return load_jsonl(path), str(path)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop when it is installed (it comes with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _print_summary(rep: dict[str, Any], paths: list[Path]) -> None:
    lat = rep["latency"]
    print(
        f"{rep['requests']} requests, {rep['ok']} ok, {rep['achieved_rps']} RPS; "
        f"latency p50 {lat['p50_ms']} ms p90 {lat['p90_ms']} ms p99 {lat['p99_ms']} ms "
        f"max {lat['max_ms']} ms; errors {rep['errors_by_type'] or 'none'}"
    )
    if rep["ttft"]:
        print(f"TTFT p50 {rep['ttft']['p50_ms']} ms p99 {rep['ttft']['p99_ms']} ms")
    print(f"experts {rep['routing']['by_expert']}; domains {rep['routing']['by_domain']}")
    print("wrote " + ", ".join(str(p) for p in paths))


def run(args: argparse.Namespace) -> int:
    """0: the run finished and something succeeded; 1: nothing succeeded; 2: bad flags."""
    from loadtest.report import build_report, write_report
    from loadtest.runner import run_load

    try:
        cfg = config_from_args(args)
        items, workload = load_items(args.workload)
    except ConfigError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    result = run_async(run_load(cfg, items, progress=None if args.quiet else sys.stderr))
    rep = build_report(cfg, result, workload)
    _print_summary(rep, write_report(rep, args.out))
    return 0 if rep["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadtest", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))
