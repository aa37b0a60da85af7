"""Drive load against one URL: open loop (Poisson arrivals) or closed loop (C workers)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

from loadtest.arrivals import poisson_arrivals
from loadtest.client import ChatClient
from loadtest.config import LoadConfig, Profile, Segment
from loadtest.probes import ReplicaPoller, read_spend
from loadtest.records import ReplicaSample, RequestRecord, SpendSnapshot
from loadtest.stats import percentile
from loadtest.workload import WorkItem, request_body

# Requests still in flight when the run's time is up get this long past their own timeout.
_DRAIN_GRACE_S = 2.0


@dataclass
class RunResult:
    records: list[RequestRecord]
    elapsed_s: float
    stopped_by: str
    spend_before: SpendSnapshot | None = None
    spend_after: SpendSnapshot | None = None
    replicas: list[ReplicaSample] = field(default_factory=list)
    schedule_lag_p99_ms: float | None = None
    abandoned: int = 0


class _Live:
    """Mutable counters the progress line reads."""

    def __init__(self) -> None:
        self.sent = 0
        self.records: list[RequestRecord] = []
        self.lags: list[float] = []
        self.pending: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.errors = 0

    def add(self, record: RequestRecord) -> None:
        self.records.append(record)
        self.errors += not record.ok


def _picker(items: Sequence[WorkItem], seed: int) -> list[WorkItem]:
    order = list(items)
    random.Random(seed).shuffle(order)
    return order


def _open_profile(cfg: LoadConfig) -> Profile:
    """The configured profile, cut at --duration."""
    assert cfg.profile is not None
    segs, left = [], cfg.duration_s
    for seg in cfg.profile.segments:
        if left <= 0:
            break
        d = min(seg.duration_s, left)
        end = seg.start_rps + (seg.end_rps - seg.start_rps) * d / seg.duration_s
        segs.append(Segment(seg.start_rps, end, d))
        left -= d
    return Profile(tuple(segs))


async def _open_loop(
    cfg: LoadConfig, chat: ChatClient, order: list[WorkItem], live: _Live, t0: float
) -> tuple[str, set[asyncio.Task[None]]]:
    arrivals = poisson_arrivals(_open_profile(cfg), random.Random(cfg.seed), cfg.max_requests)
    pending = live.pending
    stopped_by = "max_requests" if len(arrivals) >= cfg.max_requests else "duration"
    for i, at in enumerate(arrivals):
        delay = t0 + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lag = max(0.0, -delay)
        live.lags.append(lag)
        if cfg.max_lag_s is not None and lag > cfg.max_lag_s:
            stopped_by = "generator_lag"
            break
        if len(pending) >= cfg.max_in_flight:
            live.sent += 1
            live.add(RequestRecord(at, 0.0, None, "client_overload"))
            continue
        task = asyncio.create_task(_one(cfg, chat, order[i % len(order)], live))
        pending.add(task)
        task.add_done_callback(pending.discard)
    return stopped_by, pending


async def _one(cfg: LoadConfig, chat: ChatClient, item: WorkItem, live: _Live) -> None:
    live.sent += 1
    body = request_body(item, model=cfg.model, stream=cfg.stream, max_tokens=cfg.max_tokens)
    live.add(await chat.send(body, item.domain))


async def _closed_loop(
    cfg: LoadConfig, chat: ChatClient, order: list[WorkItem], live: _Live, t0: float
) -> tuple[str, set[asyncio.Task[None]]]:
    deadline = t0 + cfg.duration_s

    async def worker() -> None:
        while not live.stopping and live.sent < cfg.max_requests and time.perf_counter() < deadline:
            await _one(cfg, chat, order[live.sent % len(order)], live)

    workers = {asyncio.create_task(worker()) for _ in range(cfg.concurrency)}
    live.pending.update(workers)
    done, pending = await asyncio.wait(workers, timeout=cfg.duration_s)
    for task in done:
        task.result()
    return ("max_requests" if live.sent >= cfg.max_requests else "duration"), pending


async def _drain(pending: set[asyncio.Task[None]], timeout_s: float) -> int:
    """Let in-flight requests finish within their timeout; cancel (and count) the rest."""
    if not pending:
        return 0
    _, still = await asyncio.wait(pending, timeout=timeout_s + _DRAIN_GRACE_S)
    for task in still:
        task.cancel()
    await asyncio.gather(*still, return_exceptions=True)
    return len(still)


def _progress_line(live: _Live, elapsed: float) -> str:
    recs = live.records
    recent = [r.latency_s for r in recs[-500:] if r.ok]
    p50 = percentile(recent, 50)
    p50_txt = "-" if p50 is None else f"{p50 * 1000:.0f}ms"
    rps = len(recs) / elapsed if elapsed > 0 else 0.0
    return (
        f"\r[{elapsed:6.1f}s] sent {live.sent} done {len(recs)} err {live.errors} "
        f"inflight {live.sent - len(recs)} {rps:.1f} rps p50 {p50_txt}   "
    )


async def _progress(live: _Live, t0: float, stop: asyncio.Event, out: TextIO) -> None:
    while not stop.is_set():
        out.write(_progress_line(live, time.perf_counter() - t0))
        out.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    out.write(_progress_line(live, time.perf_counter() - t0) + "\n")
    out.flush()


async def _settled_spend(client: httpx.AsyncClient, url: str) -> SpendSnapshot | None:
    """Ledger writes may trail the responses: read until two readings agree (at most ~3 s)."""
    last = await read_spend(client, url)
    for _ in range(6):
        if last is None:
            return None
        await asyncio.sleep(0.5)
        now = await read_spend(client, url)
        if now == last:
            return now
        last = now
    return last


@contextlib.contextmanager
def _interrupt_cancels(task: asyncio.Task[Any]) -> Iterator[list[bool]]:
    """Ctrl-C ends the load early but still yields a report of what was done.

    The yielded list is truthy once interrupted. Outside the main thread (or where signal
    handlers are unsupported) nothing is installed and Ctrl-C behaves as usual.
    """
    flag: list[bool] = []
    loop = asyncio.get_running_loop()

    def on_sigint() -> None:
        flag.append(True)
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError, ValueError):
        yield flag
        return
    try:
        yield flag
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def make_client(cfg: LoadConfig, pool: int) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    return httpx.AsyncClient(
        headers=headers,
        timeout=httpx.Timeout(cfg.timeout_s),
        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
        trust_env=False,  # no proxies from the environment: only the given URL is reached
        follow_redirects=False,
    )


async def run_load(
    cfg: LoadConfig, items: Sequence[WorkItem], progress: TextIO | None = sys.stderr
) -> RunResult:
    """One bounded run; returns raw records plus the side readings."""
    if not items:
        raise ValueError("no work items")
    live, stop = _Live(), asyncio.Event()
    pool = cfg.concurrency if cfg.mode == "closed" else cfg.max_in_flight
    async with make_client(cfg, pool) as client:
        before = await read_spend(client, cfg.url) if cfg.spend else None
        t0 = time.perf_counter()
        chat = ChatClient(client, cfg.url, t0, cfg.timeout_s)
        side: list[asyncio.Task[None]] = []
        poller = None
        if cfg.serve_status_url:
            poller = ReplicaPoller(cfg.serve_status_url, cfg.poll_interval_s, t0)
            side.append(asyncio.create_task(poller.run(stop)))
        if progress is not None:
            side.append(asyncio.create_task(_progress(live, t0, stop, progress)))
        loop = _open_loop if cfg.mode == "open" else _closed_loop
        load = asyncio.create_task(loop(cfg, chat, _picker(items, cfg.seed), live, t0))
        try:
            with _interrupt_cancels(load) as interrupted:
                try:
                    stopped_by, pending = await load
                except asyncio.CancelledError:
                    if not interrupted:
                        raise
                    live.stopping = True
                    stopped_by, pending = "interrupted", live.pending
            abandoned = await _drain(pending, 0.0 if interrupted else cfg.timeout_s)
        finally:
            elapsed = time.perf_counter() - t0
            stop.set()
            await asyncio.gather(*side, return_exceptions=True)
        after = await _settled_spend(client, cfg.url) if before is not None else None
    lag = percentile(live.lags, 99)
    return RunResult(
        records=live.records,
        elapsed_s=elapsed,
        stopped_by=stopped_by,
        spend_before=before,
        spend_after=after,
        replicas=poller.samples if poller else [],
        schedule_lag_p99_ms=None if lag is None else round(lag * 1000, 3),
        abandoned=abandoned,
    )
