"""Budgets, rate limits, keys and the ledger on a real three-master Redis Cluster.

The test starts three `redis-server --cluster-enabled yes` on loopback, joins them with
`redis-cli --cluster create` (no replicas), waits for cluster_state:ok and talks to them through
the gateway's own client (`make_client` with `?cluster=true`). Teams are picked so that their
slots sit on different masters: a script that touched a key outside its team's slot, or a MULTI
across teams, would be refused here.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.crc import key_slot
from redis.exceptions import ResponseError

from router.continuous.feedback import FeedbackIn, FeedbackStore
from router.errors import BudgetExceeded, RateLimited
from router.finance.budgets import Limiter
from router.finance.keys import KeyInfo, KeyStore
from router.finance.keyspace import is_cluster
from router.finance.ledger import Ledger
from router.finance.redis_server import make_client
from tests.integration.test_ledger import actual, expected, make_records

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

MASTERS = 3
READY_TIMEOUT_S = 30.0


def _free_cluster_port() -> int:
    """A port P with P and its cluster bus port P + 10000 both free on loopback."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as bus:
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _cluster_ok(port: int) -> bool:
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "cluster", "info"],
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout
    return "cluster_state:ok" in out


def _wait(check: object, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (OSError, subprocess.SubprocessError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"Redis Cluster: {what} not reached in {READY_TIMEOUT_S:.0f} s")


def _ping(port: int) -> bool:
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "ping"],
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout
    return "PONG" in out


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        pytest.skip("redis-server / redis-cli are not installed (scripts/setup.sh installs them)")
    base = tmp_path_factory.mktemp("redis-cluster")
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    try:
        for _ in range(MASTERS):
            port = _free_cluster_port()
            node_dir = Path(base, str(port))
            node_dir.mkdir()
            args = [server, "--port", str(port), "--bind", "127.0.0.1"]
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            args += ["--dir", str(node_dir), "--save", "", "--appendonly", "no"]
            args += ["--logfile", str(node_dir / "redis.log")]
            procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL))
            ports.append(port)
        for port in ports:
            _wait(lambda p=port: _ping(p), f"node {port} answering")
        nodes = [f"127.0.0.1:{p}" for p in ports]
        subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for port in ports:
            _wait(lambda p=port: _cluster_ok(p), f"cluster_state:ok on {port}")
        yield f"redis://127.0.0.1:{ports[0]}/0?cluster=true"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
async def cluster(cluster_url: str) -> AsyncIterator[object]:
    client = make_client(cluster_url)
    assert is_cluster(client)
    await client.ping()
    yield client
    await client.aclose()


async def _teams_on_distinct_masters(client: object, n: int, stem: str) -> list[str]:
    """n team names whose hash slots are served by n different masters."""
    owners: dict[str, str] = {}
    for i in range(500):
        team = f"{stem}{i}"
        node = client.get_node_from_key("{" + team + "}")  # type: ignore[attr-defined]
        owners.setdefault(node.name, team)
        if len(owners) == n:
            return list(owners.values())
    raise AssertionError("could not spread teams over the masters")


async def _keys(client: object, prefix: str) -> list[str]:
    return [k async for k in client.scan_iter(f"{prefix}:*")]  # type: ignore[attr-defined]


async def test_the_cluster_refuses_cross_slot_scripts(cluster, redis_prefix: str) -> None:
    """The check these tests rely on: a script over two teams' slots is refused."""
    a, b = await _teams_on_distinct_masters(cluster, 2, "x")
    k1, k2 = f"{redis_prefix}:team:{{{a}}}", f"{redis_prefix}:team:{{{b}}}"
    assert key_slot(k1.encode()) != key_slot(k2.encode())
    node = cluster.get_node_from_key(k1)
    with pytest.raises(ResponseError):
        # The old admission script read keys it was not given: in another slot, it fails so.
        await cluster.execute_command(
            "EVAL", "return redis.call('GET', ARGV[1])", 1, k1, k2, target_nodes=node
        )


async def test_admission_reserve_settle_and_status(cluster, redis_prefix: str) -> None:
    teams = await _teams_on_distinct_masters(cluster, MASTERS, "t")
    store = KeyStore(cluster, prefix=redis_prefix)
    limiter = Limiter(cluster, prefix=redis_prefix)
    for team in teams:
        key = (await store.create_key(team, budget_usd="0.001")).info  # 1_000_000 nano
        res = await limiter.admit(key, 400_000, 50)
        assert (res.budget_nano, res.spent_nano, res.reserved_nano) == (10**6, 0, 400_000)
        assert await limiter.settle(res, 300_000, 40)
        assert not await limiter.settle(res, 300_000, 40)  # a retried settle counts once
        status = await limiter.status(team)
        assert (status.spent_nano, status.reserved_nano) == (300_000, 0)
        await limiter.admit(key, 700_000, 0)  # in flight: covers the rest of the budget
        with pytest.raises(BudgetExceeded):
            await limiter.admit(key, 1, 0)
    # Every key of one team is in one slot, and the teams are on different masters.
    slots: dict[str, set[int]] = {}
    for k in await _keys(cluster, redis_prefix):
        if "{" in k:
            team = k[k.index("{") + 1 : k.index("}")]
            slots.setdefault(team, set()).add(key_slot(k.encode()))
    assert set(slots) == set(teams)
    assert all(len(s) == 1 for s in slots.values())
    assert len({cluster.get_node_from_key(f"{{{t}}}").name for t in teams}) == MASTERS


async def test_keys_authenticate_list_and_revoke(cluster, redis_prefix: str) -> None:
    store = KeyStore(cluster, prefix=redis_prefix, cache_ttl_s=0)
    a, b = await _teams_on_distinct_masters(cluster, 2, "k")
    ka, kb = await store.create_key(a, rpm=3), await store.create_key(b, admin=True)
    assert (await store.require(f"Bearer {ka.plaintext}")).team == a
    assert (await store.require(f"Bearer {kb.plaintext}", admin=True)).admin
    assert {k.key_id for k in await store.list_keys()} == {ka.info.key_id, kb.info.key_id}
    assert await store.teams() == sorted([a, b])
    assert await store.revoke(ka.info.key_id)
    assert await store.authenticate(ka.plaintext) is None


async def test_burst_does_not_overshoot_the_budget(cluster, redis_prefix: str) -> None:
    """40 concurrent requests of $0.001 against a $0.0105 budget, from 4 limiters (replicas)."""
    store = KeyStore(cluster, prefix=redis_prefix)
    await store.set_budget("burst", "0.0105", "month")
    key = KeyInfo(key_id="key_burst", team="burst")
    cost = 1_000_000
    limiters = [Limiter(cluster, prefix=redis_prefix) for _ in range(4)]

    async def one(i: int) -> int:
        try:
            res = await limiters[i % 4].admit(key, cost, 0)
        except BudgetExceeded:
            return 0
        await asyncio.sleep(0.005 * (i % 3))
        await limiters[i % 4].settle(res, cost, 0)
        return 1

    admitted = sum(await asyncio.gather(*(one(i) for i in range(40))))
    status = await limiters[0].status("burst")
    assert admitted == 11  # spent + in flight covers the budget after ceil(10.5) admissions
    assert status.spent_nano == 11 * cost <= 10_500_000 + cost
    assert status.reserved_nano == 0


async def test_rate_limits_refuse_past_rpm_and_tpm(cluster, redis_prefix: str) -> None:
    limiter = Limiter(cluster, prefix=redis_prefix)
    key = KeyInfo(key_id="key_rpm", team="rpm-team", rpm=5)
    for _ in range(5):
        await limiter.admit(key, 0, 10)
    with pytest.raises(RateLimited) as err:
        await limiter.admit(key, 0, 10)
    assert err.value.retry_after is not None and 0 < err.value.retry_after <= 60
    other = KeyInfo(key_id="key_rpm2", team="rpm-team", rpm=5)
    await limiter.admit(other, 0, 0)  # limits are per key, not per team

    tkey = KeyInfo(key_id="key_tpm", team="tpm-team", tpm=1000)
    first = await limiter.admit(tkey, 0, 600)
    with pytest.raises(RateLimited):
        await limiter.admit(tkey, 0, 600)
    assert await limiter.settle(first, 0, 100)  # the real call used 100, not 600
    await limiter.admit(tkey, 0, 600)


async def test_ledger_write_replay_and_spend_reads(
    cluster, cluster_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    # A generous write timeout: a loaded machine may spool a batch, never lose or double it.
    ledger = Ledger(cluster_url, tmp_path / "spool.jsonl", prefix=redis_prefix, write_timeout_s=10)
    try:
        recs = make_records(120, seed=5, prefix="c")
        for rec in recs:
            await ledger.record(rec)
        await ledger.drain(timeout_s=60)
        await ledger.flush_spool()
        assert not ledger.spool_pending()
        # A replay of every record counts nothing twice.
        assert await ledger._write_batch(recs[:50]) == 0
        assert not await ledger.write(recs[0])
        for dim in ("team", "expert", "domain", "day"):
            assert await actual(ledger, dim) == expected(recs, dim)
        alpha = [r for r in recs if r.team == "alpha"]
        assert await actual(ledger, "expert", team="alpha") == expected(alpha, "expert")
        top = await ledger.top_requests(5)
        assert [r.cost_nano for r in top] == sorted((r.cost_nano for r in recs), reverse=True)[:5]
        lat = await ledger.latency_percentiles()
        assert sum(int(v["samples"]) for v in lat.values()) == len(recs)
        got = await ledger.get(recs[7].request_id)
        assert got is not None and got.cost_nano == recs[7].cost_nano
        # Feedback joins a record by id; its record and index live in two slots.
        store = FeedbackStore(cluster, ledger.get, prefix=redis_prefix)
        fb = await store.submit(FeedbackIn(request_id=got.request_id, rating=1), None)
        assert fb.team == got.team
        assert [r.request_id for r in await store.records_between()] == [got.request_id]
        # The teams' per-day keys really are spread over the masters.
        nodes = {
            cluster.get_node_from_key(k).name
            for k in await _keys(cluster, redis_prefix)
            if ":agg:" in k
        }
        assert len(nodes) >= 2
    finally:
        await ledger.aclose()
