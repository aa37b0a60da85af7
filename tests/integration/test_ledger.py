"""The ledger against a real redis-server: exact totals under concurrency, retries and restarts."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from router.finance.ledger import Ledger
from router.finance.ledger_types import CostRecord
from router.finance.redis_server import EmbeddedRedis, free_port
from router.finance.spend import spend_csv, spend_json

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

TEAMS = ("alpha", "beta", "gamma")
EXPERTS = ("code-small", "math-small", "generalist")
DOMAINS = ("code", "math", "general")
DAYS = (date(2025, 3, 1), date(2025, 3, 2), date(2025, 3, 3))


def _ts(day: date, rng: random.Random) -> float:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
    return start + rng.uniform(0, 86_399)


def make_records(n: int, seed: int, prefix: str = "r") -> list[CostRecord]:
    rng = random.Random(seed)
    return [
        CostRecord(
            request_id=f"{prefix}{i}",
            ts=_ts(rng.choice(DAYS), rng),
            team=rng.choice(TEAMS),
            expert=rng.choice(EXPERTS),
            domain=rng.choice(DOMAINS),
            input_tokens=rng.randint(1, 4000),
            output_tokens=rng.randint(0, 1000),
            cost_nano=rng.randint(0, 5_000_000),
            baseline_nano=rng.randint(0, 9_000_000),
            latency_ms=round(rng.uniform(5, 900), 3),
            status=rng.choice((200, 200, 200, 502)),
        )
        for i in range(n)
    ]


def expected(recs: list[CostRecord], dim: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in {r.request_id: r for r in recs}.values():
        key = r.day if dim == "day" else getattr(r, dim)
        row = out[key]
        row["requests"] += 1
        row["errors"] += int(r.status >= 400)
        row["input_tokens"] += r.input_tokens
        row["output_tokens"] += r.output_tokens
        row["cost_nano"] += r.cost_nano
        row["baseline_nano"] += r.baseline_nano
        row["latency_us"] += r.latency_us
    return {k: dict(v) for k, v in out.items()}


async def actual(ledger: Ledger, dim: str, **kw: object) -> dict[str, dict[str, int]]:
    rows = await ledger.totals(dim, **kw)  # type: ignore[arg-type]
    return {
        r.group[0]: {
            "requests": r.requests,
            "errors": r.errors,
            "input_tokens": r.input_tokens,
            "output_tokens": r.output_tokens,
            "cost_nano": r.cost_nano,
            "baseline_nano": r.baseline_nano,
            "latency_us": r.latency_us,
        }
        for r in rows
    }


@pytest.fixture
async def ledger(redis_url: str, redis_prefix: str, tmp_path: Path):
    led = Ledger(redis_url, tmp_path / "spool.jsonl", prefix=redis_prefix)
    yield led
    await led.aclose()


async def test_concurrent_records_with_duplicates_are_exact(ledger: Ledger) -> None:
    recs = make_records(500, seed=1)
    dupes = random.Random(2).sample(recs, 150)
    stream = recs + dupes
    random.Random(3).shuffle(stream)
    await asyncio.gather(*(ledger.record(r) for r in stream))
    await ledger.drain()
    # On a loaded machine some writes may time out and spool; replaying them must stay exact.
    await ledger.flush_spool()
    assert not ledger.spool_pending()
    for dim in ("team", "expert", "domain", "day"):
        assert await actual(ledger, dim) == expected(recs, dim), dim


async def test_retried_write_counts_once(ledger: Ledger) -> None:
    rec = make_records(1, seed=4)[0]
    assert await ledger.write(rec) is True
    assert await ledger.write(rec) is False
    rows = await ledger.totals("team")
    assert [(r.group, r.requests, r.cost_nano) for r in rows] == [((rec.team,), 1, rec.cost_nano)]
    assert await ledger.get(rec.request_id) == rec


async def test_date_range_team_filter_and_cross_table(ledger: Ledger) -> None:
    recs = make_records(200, seed=5)
    for r in recs:
        await ledger.write(r)
    mid = [r for r in recs if r.day == DAYS[1].isoformat()]
    got = await actual(ledger, "team", from_date=DAYS[1], to_date=DAYS[1])
    assert got == expected(mid, "team")
    beta = await actual(ledger, "expert", team="beta")
    assert beta == expected([r for r in recs if r.team == "beta"], "expert")
    cross = await ledger.totals("day,team")
    want = defaultdict(int)
    for r in recs:
        want[(r.day, r.team)] += r.cost_nano
    assert {row.group: row.cost_nano for row in cross} == dict(want)


async def test_top_requests_and_latency_percentiles(ledger: Ledger) -> None:
    recs = make_records(120, seed=6)
    await asyncio.gather(*(ledger.write(r) for r in recs))
    top = await ledger.top_requests(5)
    want = sorted(recs, key=lambda r: (-r.cost_nano, r.request_id))[:5]
    assert [r.request_id for r in top] == [r.request_id for r in want]
    gamma_top = await ledger.top_requests(3, team="gamma")
    want_g = sorted((r for r in recs if r.team == "gamma"), key=lambda r: -r.cost_nano)[:3]
    assert [r.cost_nano for r in gamma_top] == [r.cost_nano for r in want_g]
    pct = await ledger.latency_percentiles()
    for expert in EXPERTS:
        lat = sorted(r.latency_ms for r in recs if r.expert == expert)
        assert pct[expert]["samples"] == len(lat)
        assert pct[expert]["p50"] == pytest.approx(lat[(len(lat) + 1) // 2 - 1])
        assert pct[expert]["p95"] == pytest.approx(lat[-(-len(lat) * 95 // 100) - 1])


async def test_record_never_raises_or_blocks_when_redis_is_unreachable(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    counted: list[int] = []
    led = Ledger(url, tmp_path / "spool.jsonl", write_timeout_s=0.5, on_spool=counted.append)
    recs = make_records(20, seed=7)
    t0 = time.perf_counter()
    for r in recs:
        await led.record(r)
    assert time.perf_counter() - t0 < 0.1
    await led.drain()
    assert led.spooled == sum(counted) == 20
    lines = (tmp_path / "spool.jsonl").read_text().splitlines()
    assert sorted(CostRecord.from_json(x).request_id for x in lines) == sorted(
        r.request_id for r in recs
    )
    await led.redis.aclose()


async def test_redis_restart_spools_then_replays_exactly(
    private_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    led = Ledger(
        private_redis.url, tmp_path / "spool.jsonl", write_timeout_s=1.0, replay_interval_s=0.1
    )
    await led.start()
    recs = make_records(300, seed=8)
    before, during, after = recs[:100], recs[100:200], recs[200:]
    await asyncio.gather(*(led.record(r) for r in before))
    await led.drain()
    private_redis.stop()
    # While Redis is down: new records and retries of already-counted ones.
    await asyncio.gather(*(led.record(r) for r in during + before[:30]))
    await led.drain()
    assert led.spooled >= 130  # slow writes of `before` may have spooled too
    private_redis.start()
    await asyncio.gather(*(led.record(r) for r in after + during[:10]))
    await led.drain()
    deadline = time.monotonic() + 5
    while led.spool_pending() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not led.spool_pending()
    for dim in ("team", "expert", "domain", "day"):
        assert await actual(led, dim) == expected(recs, dim), dim
    await led.aclose()


async def test_spool_survives_torn_line(redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    recs = make_records(3, seed=9)
    spool.write_text("".join(r.to_json() + "\n" for r in recs) + '{"request_id": "x", "ts"')
    led = Ledger(redis_url, spool, prefix=redis_prefix)
    assert await led.flush_spool() == 3
    assert not led.spool_pending()
    assert await actual(led, "team") == expected(recs, "team")
    await led.aclose()


async def test_spend_report_from_ledger_rows(ledger: Ledger) -> None:
    recs = make_records(60, seed=10)
    await asyncio.gather(*(ledger.write(r) for r in recs))
    rows = await ledger.totals("expert", team="alpha")
    body = spend_json(rows, "expert", team="alpha")
    mine = [r for r in recs if r.team == "alpha"]
    assert body["total"]["cost_nano"] == sum(r.cost_nano for r in mine)
    assert body["total"]["requests"] == len(mine)
    by_expert = {row["expert"]: row["cost_nano"] for row in body["data"]}
    assert by_expert == {e: v["cost_nano"] for e, v in expected(mine, "expert").items()}
    assert len(spend_csv(rows, "expert").splitlines()) == len(rows) + 1


async def test_dashboard_json_is_consistent(ledger: Ledger) -> None:
    from router.finance.budgets import BudgetStatus
    from router.finance.spend import dashboard_json

    recs = make_records(80, seed=12)
    await asyncio.gather(*(ledger.write(r) for r in recs))
    budget = BudgetStatus("alpha", "month", "2025-03", 10**9, 250_000_000, 1_000)
    body = dashboard_json(
        by_day=await ledger.totals("day"),
        by_team=await ledger.totals("team"),
        by_expert=await ledger.totals("expert"),
        by_domain=await ledger.totals("domain"),
        top=await ledger.top_requests(3),
        latency=await ledger.latency_percentiles(),
        budgets=[budget],
    )
    total = sum(r.cost_nano for r in recs)
    assert body["total"]["cost_nano"] == total
    for part in ("by_day", "by_team", "by_expert", "by_domain"):
        assert sum(row["cost_nano"] for row in body[part]) == total, part
    assert [r["cost_nano"] for r in body["top_requests"]] == sorted(
        (r.cost_nano for r in recs), reverse=True
    )[:3]
    assert body["budgets"][0]["burn"] == 0.25 and body["budgets"][0]["spent_usd"] == "0.250000000"
    assert set(body["latency_ms"]) == set(EXPERTS)
