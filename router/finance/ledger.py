"""The spend ledger in Redis: one record per request plus per-day aggregates, written exactly once.

Layout (prefix `slm` by default):
  {p}:req:{request_id}      hash, the record; its existence is the idempotency guard (TTL =
                            retention, so a replay older than the retention would count again)
  {p}:agg:{day}             hash, field "team\x1fexpert\x1fdomain\x1fmetric" -> integer sum
  {p}:days                  zset of days with data (score yyyymmdd)
  {p}:top:{day}             zset request_id -> cost_nano, capped (most expensive requests)
  {p}:lat:{day}:{expert}    list of latency samples in ms, newest first, capped
  {p}:latx:{day}            set of experts with latency samples that day

One Lua script checks the guard and applies every write, so a record is counted entirely or not
at all, and a retried or replayed record never counts twice.

On Redis Cluster (router.finance.keyspace) the per-day keys are per team and day, in the team's
slot, so the script's keys share one slot; what cannot (the record, found by request id alone,
and the indexes of days and of each day's teams) is written beside it, idempotently:
  {p}:req:{request_id}              the record (same name; written before the script)
  {p}:seen:{team}:{request_id}      the count-once guard, in the script
  {p}:agg:{team}:{day}, {p}:top:{team}:{day}, {p}:lat:{team}:{day}:{expert},
  {p}:latx:{team}:{day}             as above, one team each
  {p}:days, {p}:dayteams:{day}      zset of days, set of the day's teams (reports read these)
A batch that fails part-way is spooled and replayed whole: the guard keeps the counts exact.

`record()` never raises and returns at once: it queues the record for one writer task that
pipelines batches with a short timeout; a failed batch goes to a local JSONL spool that a
background loop replays when Redis answers again. Each process should have its own spool file
(Serve replicas are separate processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.finance.keyspace import KeySpace
from router.finance.ledger_lua import WRITE_LUA
from router.finance.ledger_types import METRICS, CostRecord, TotalsRow, day_score, parse_dims
from router.finance.redis_server import make_client
from router.finance.spool import Spool, read_spool

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

SEP = "\x1f"
DEFAULT_RETENTION_S = 400 * 24 * 3600
REPLAY_BATCH = 200
CLUSTER_SCRIPTS = 32  # concurrent ledger scripts per batch on a cluster


def _clean(name: str) -> str:
    # The separator must never occur inside a name, or a cell would split wrongly.
    return (name or "unknown").replace(SEP, "_")


class Ledger:
    """Async ledger client: `await start()` runs the spool replay loop, `await aclose()` ends it."""

    def __init__(
        self,
        redis_url: str,
        spool_path: str | Path,
        *,
        prefix: str = "slm",
        retention_s: int = DEFAULT_RETENTION_S,
        write_timeout_s: float = 1.0,
        top_cap: int = 500,
        latency_cap: int = 2000,
        replay_interval_s: float = 5.0,
        max_pending: int = 10_000,
        batch_size: int = 100,
        client: Redis | None = None,
        on_spool: Callable[[int], None] | None = None,
    ) -> None:
        self.redis: Redis = client or make_client(redis_url)
        self.spool = Spool(spool_path, on_spool)
        self.prefix = prefix
        self.space = KeySpace.of(self.redis, prefix)
        self.retention_s = retention_s
        self.write_timeout_s = write_timeout_s
        self.top_cap = top_cap
        self.latency_cap = latency_cap
        self.replay_interval_s = replay_interval_s
        self.max_pending = max_pending
        self.batch_size = batch_size
        self.replayed = 0
        self._script = self.redis.register_script(WRITE_LUA)
        self._queue: asyncio.Queue[CostRecord] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._replay_lock = asyncio.Lock()
        self._loop_task: asyncio.Task[None] | None = None
        self._down_until = 0.0
        self._last_warning = -1e9

    # ---- writing -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._replay_loop(), name="ledger-replay")

    async def record(self, rec: CostRecord) -> None:
        """Queue the write and return at once; never raises."""
        try:
            self._ensure_writer().put_nowait(rec)
        except asyncio.QueueFull:
            self.spool.append([rec])  # Redis far behind: keep the record, replay it later
        except Exception:  # the answer must go out even if the ledger is broken
            log.exception("ledger: could not queue a write")

    async def write(self, rec: CostRecord) -> bool:
        """Write now and wait (raises on Redis errors). True if new, False if already counted."""
        return bool(await self._write_batch([rec]))

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait until queued records are written (or spooled)."""
        if self._queue is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._queue.join()

    def _ensure_writer(self) -> asyncio.Queue[CostRecord]:
        # Created lazily: the queue and task belong to the event loop of the first record().
        if self._queue is None:
            self._queue = asyncio.Queue(maxsize=self.max_pending)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop(), name="ledger-writer")
        return self._queue

    async def _write_loop(self) -> None:
        """One writer pipelines whatever has queued up: one round trip per batch, not per record."""
        assert self._queue is not None
        queue = self._queue
        me = asyncio.current_task()
        while True:
            # A cancel swallowed inside a write (redis-py's cancel-safe connection teardown
            # can) still ends the writer: else it parks on get() and the loop's shutdown,
            # which waits for every cancelled task, waits forever.
            if me is not None and me.cancelling():
                raise asyncio.CancelledError
            batch = [await queue.get()]
            while len(batch) < self.batch_size and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await self._write_or_spool(batch)
            finally:
                for _ in batch:
                    queue.task_done()

    async def _write_or_spool(self, batch: list[CostRecord]) -> None:
        if time.monotonic() < self._down_until:
            self.spool.append(batch)
            return
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancel that lands as the
            # write finishes (cpython gh-86296), and this writer then waited on forever.
            async with asyncio.timeout(self.write_timeout_s):
                await self._write_batch(batch)
        except Exception as exc:  # any failure: keep the records, replay later (idempotent)
            now = time.monotonic()
            self._down_until = now + min(1.0, self.replay_interval_s)
            if now - self._last_warning > 10.0:  # one line per outage, not one per request
                self._last_warning = now
                log.warning("ledger: Redis write failed (%r); spooling to %s", exc, self.spool.path)
            self.spool.append(batch)

    def _keys(self, rec: CostRecord) -> list[str]:
        s, day, team = self.space, rec.day, _clean(rec.team)
        scope = s.ledger_scope(team)
        guard = s.seen(team, rec.request_id) if s.cluster else s.record(rec.request_id)
        keys = [guard, s.agg(scope, day), s.top(scope, day)]
        keys += [s.latency(scope, day, _clean(rec.expert)), s.latency_experts(scope, day)]
        return keys if s.cluster else [*keys, s.days()]

    def _args(self, rec: CostRecord) -> list[Any]:
        cell = SEP.join((_clean(rec.team), _clean(rec.expert), _clean(rec.domain), ""))
        values = {
            "requests": 1,
            "errors": int(rec.is_error),
            "input_tokens": rec.input_tokens,
            "output_tokens": rec.output_tokens,
            "cost_nano": rec.cost_nano,
            "baseline_nano": rec.baseline_nano,
            "latency_us": rec.latency_us,
        }
        metric_args: list[Any] = []
        for name in METRICS:
            metric_args += [name, values[name]]
        flat: list[Any] = []
        for k, v in rec.to_hash().items():
            flat += [k, v]
        tail = [rec.request_id, rec.cost_nano, f"{rec.latency_ms:.3f}", _clean(rec.expert)]
        head = [
            "s" if self.space.cluster else "r",
            self.retention_s,
            cell,
            day_score(rec.day),
            rec.day,
            self.top_cap,
            self.latency_cap,
            len(METRICS),
        ]
        if self.space.cluster:
            return head + metric_args + tail  # the record is written outside the script
        return head + metric_args + tail + flat

    # ---- spool ---------------------------------------------------------------------------

    @property
    def spooled(self) -> int:
        return self.spool.spooled

    def spool_pending(self) -> bool:
        return self.spool.pending()

    async def flush_spool(self) -> int:
        """Replay spooled records; returns how many were newly counted. Never raises."""
        async with self._replay_lock:
            counted = 0
            for path in self.spool.claim():
                try:
                    n = await self._replay_file(path)
                except Exception as exc:
                    log.warning("ledger: replay of %s stopped (%r)", path, exc)
                    break
                counted += n
            self.replayed += counted
            if counted:
                self._down_until = 0.0
            return counted

    async def _replay_file(self, path: Path) -> int:
        recs = read_spool(path)
        counted = 0
        for start in range(0, len(recs), REPLAY_BATCH):
            batch = recs[start : start + REPLAY_BATCH]
            try:
                async with asyncio.timeout(self.write_timeout_s * 5):
                    counted += await self._write_batch(batch)
            except Exception:
                # Keep what is left (this batch may be half-applied: replay is idempotent).
                self.spool.append(recs[start:])
                path.unlink(missing_ok=True)
                raise
        path.unlink(missing_ok=True)
        return counted

    async def _write_batch(self, batch: Sequence[CostRecord]) -> int:
        if self.space.cluster:
            return await self._write_cluster_batch(batch)
        async with self.redis.pipeline(transaction=False) as pipe:
            for rec in batch:
                await self._script(keys=self._keys(rec), args=self._args(rec), client=pipe)
            results = await pipe.execute()
        return sum(int(r) for r in results)

    async def _write_cluster_batch(self, batch: Sequence[CostRecord]) -> int:
        """The record and indexes first (idempotent), then each count-once script.

        The scripts run as single calls, not in a cluster pipeline: redis-py's Script reloads
        itself on a node that answers NOSCRIPT (a new or restarted master); a cluster pipeline
        does not. Records go CLUSTER_SCRIPTS at a time, so a batch stays under the node's cap.
        """
        s, ttl = self.space, self.retention_s
        async with self.redis.pipeline(transaction=False) as pipe:
            for rec in batch:
                pipe.hset(s.record(rec.request_id), mapping=rec.to_hash())  # type: ignore[arg-type]
                pipe.expire(s.record(rec.request_id), ttl)
                pipe.zadd(s.days(), {rec.day: day_score(rec.day)})
                pipe.sadd(s.day_teams(rec.day), _clean(rec.team))
                pipe.expire(s.day_teams(rec.day), ttl)
            await pipe.execute()
        counted = 0
        for start in range(0, len(batch), CLUSTER_SCRIPTS):
            part = batch[start : start + CLUSTER_SCRIPTS]
            calls = [self._script(keys=self._keys(r), args=self._args(r)) for r in part]
            counted += sum(int(r) for r in await asyncio.gather(*calls))
        return counted

    async def _replay_loop(self) -> None:
        while True:
            await asyncio.sleep(self.replay_interval_s)
            if self.spool_pending():
                await self.flush_spool()

    async def aclose(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        await self.drain()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self.spool_pending():
            await self.flush_spool()
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    # ---- queries -------------------------------------------------------------------------

    async def days(self, from_date: date | None = None, to_date: date | None = None) -> list[str]:
        lo = day_score(from_date) if from_date else "-inf"
        hi = day_score(to_date) if to_date else "+inf"
        return [str(d) for d in await self.redis.zrangebyscore(self.space.days(), lo, hi)]

    async def _cells(
        self, from_date: date | None, to_date: date | None, team: str | None = None
    ) -> list[tuple[str, str]]:
        """(day, scope) of every per-day key set in the range: one per day on one Redis; on a
        cluster one per team with data that day (only `team`'s when given)."""
        days = await self.days(from_date, to_date)
        if not self.space.cluster:
            return [(day, "") for day in days]
        if team is not None:
            return [(day, self.space.ledger_scope(_clean(team))) for day in days]
        async with self.redis.pipeline(transaction=False) as pipe:
            for day in days:
                pipe.smembers(self.space.day_teams(day))
            teams = await pipe.execute()
        return [
            (day, self.space.ledger_scope(t))
            for day, ts in zip(days, teams, strict=True)
            for t in sorted(ts)
        ]

    async def totals(
        self,
        group_by: str | Sequence[str] = "team",
        from_date: date | None = None,
        to_date: date | None = None,
        team: str | None = None,
    ) -> list[TotalsRow]:
        """Sums per group over [from_date, to_date] (UTC days, inclusive), sorted by group.

        `group_by` is one of day|team|expert|domain, or several ("day,team") for a cross table.
        """
        dims = parse_dims(group_by)
        cells = await self._cells(from_date, to_date, team)
        async with self.redis.pipeline(transaction=False) as pipe:
            for day, scope in cells:
                pipe.hgetall(self.space.agg(scope, day))
            hashes = await pipe.execute()
        sums: dict[tuple[str, ...], dict[str, int]] = {}
        for (day, _), h in zip(cells, hashes, strict=True):
            for field, value in h.items():
                t, e, d, metric = field.split(SEP)
                if team is not None and t != team:
                    continue
                cell = {"day": day, "team": t, "expert": e, "domain": d}
                group = tuple(cell[x] for x in dims)
                row = sums.setdefault(group, dict.fromkeys(METRICS, 0))
                row[metric] = row.get(metric, 0) + int(value)
        return [TotalsRow(group=g, dims=dims, **m) for g, m in sorted(sums.items())]

    async def get(self, request_id: str) -> CostRecord | None:
        h: dict[str, Any] = await self.redis.hgetall(self.space.record(request_id))  # type: ignore[assignment]
        return CostRecord.from_mapping(h) if h else None

    async def top_requests(
        self,
        n: int = 10,
        from_date: date | None = None,
        to_date: date | None = None,
        team: str | None = None,
    ) -> list[CostRecord]:
        """The n most expensive requests in the range (among the `top_cap` kept per day)."""
        cells = await self._cells(from_date, to_date, team)
        async with self.redis.pipeline(transaction=False) as pipe:
            for day, scope in cells:
                pipe.zrevrange(self.space.top(scope, day), 0, -1, withscores=True)
            ranked = [m for per_day in await pipe.execute() for m in per_day]
        ranked.sort(key=lambda m: (-m[1], m[0]))
        out: list[CostRecord] = []
        for start in range(0, len(ranked), max(n, 50)):
            ids = [rid for rid, _ in ranked[start : start + max(n, 50)]]
            async with self.redis.pipeline(transaction=False) as pipe:
                for rid in ids:
                    pipe.hgetall(self.space.record(rid))
                hashes = await pipe.execute()
            for h in hashes:
                if h and (team is None or h.get("team") == team):
                    out.append(CostRecord.from_mapping(h))
                    if len(out) >= n:
                        return out
        return out

    async def latency_percentiles(
        self,
        from_date: date | None = None,
        to_date: date | None = None,
        percentiles: Sequence[float] = (50, 95),
    ) -> dict[str, dict[str, float]]:
        """{expert: {"p50": ms, "p95": ms, "samples": n}} over the capped samples kept per day."""
        cells = await self._cells(from_date, to_date)
        async with self.redis.pipeline(transaction=False) as pipe:
            for day, scope in cells:
                pipe.smembers(self.space.latency_experts(scope, day))
            experts_per_cell = await pipe.execute()
        triples = [(c, e) for c, es in zip(cells, experts_per_cell, strict=True) for e in es]
        async with self.redis.pipeline(transaction=False) as pipe:
            for (day, scope), expert in triples:
                pipe.lrange(self.space.latency(scope, day, expert), 0, -1)
            lists = await pipe.execute()
        samples: dict[str, list[float]] = {}
        for (_, expert), values in zip(triples, lists, strict=True):
            samples.setdefault(expert, []).extend(float(v) for v in values)
        return {e: _percentiles(v, percentiles) for e, v in sorted(samples.items())}


def _percentiles(values: list[float], percentiles: Sequence[float]) -> dict[str, float]:
    """Nearest-rank percentiles: every figure is a latency that was actually observed."""
    ordered = sorted(values)
    out: dict[str, float] = {"samples": float(len(ordered))}
    for p in percentiles:
        if not ordered:
            out[f"p{p:g}"] = 0.0
            continue
        rank = max(1, -(-len(ordered) * p // 100))
        out[f"p{p:g}"] = ordered[int(min(rank, len(ordered))) - 1]
    return out
