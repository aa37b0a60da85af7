"""API keys, budgets and rate limits against a real redis-server."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from router.errors import AdminRequired, BudgetExceeded, InvalidApiKey, RateLimited
from router.finance.budgets import Limiter
from router.finance.costs import usd_to_nano
from router.finance.keys import KeyInfo, KeyStore, hash_key
from router.finance.redis_server import make_client

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def redis(redis_url: str):
    client = make_client(redis_url)
    yield client
    await client.aclose()


async def _dump(redis, prefix: str) -> str:
    """Every key and value under the prefix, as one string."""
    parts = []
    async for k in redis.scan_iter(f"{prefix}:*"):
        kind = await redis.type(k)
        parts.append(k)
        if kind == "hash":
            parts.append(json.dumps(await redis.hgetall(k)))
        elif kind == "string":
            parts.append(await redis.get(k))
        elif kind == "set":
            parts.append(json.dumps(sorted(await redis.smembers(k))))
    return "\n".join(parts)


async def test_keys_are_hashed_at_rest_and_authenticate(redis, redis_prefix: str) -> None:
    store = KeyStore(redis, prefix=redis_prefix, cache_ttl_s=0)
    created = await store.create_key("alpha", budget_usd="12.5", period="day", rpm=7, tpm=900)
    key = created.plaintext
    dump = await _dump(redis, redis_prefix)
    assert key not in dump and key[len("sk-slm-") :] not in dump
    assert hash_key(key) in dump
    info = await store.authenticate(key)
    assert info == created.info
    assert (info.team, info.rpm, info.tpm, info.admin) == ("alpha", 7, 900, False)
    budget = await store.budget("alpha")
    assert budget is not None and budget.budget_nano == usd_to_nano("12.5")
    assert budget.period == "day"
    assert await store.authenticate(key + "x") is None
    assert [k.key_id for k in await store.list_keys("alpha")] == [info.key_id]


async def test_revoke_and_require(redis, redis_prefix: str) -> None:
    store = KeyStore(redis, prefix=redis_prefix, cache_ttl_s=60)
    user = await store.create_key("beta")
    admin = await store.create_key("ops", admin=True)
    assert (await store.require(f"Bearer {user.plaintext}")).team == "beta"
    assert (await store.require(f"bearer {admin.plaintext}", admin=True)).admin
    with pytest.raises(AdminRequired) as err:
        await store.require(f"Bearer {user.plaintext}", admin=True)
    assert err.value.status_code == 403
    for header in (None, "", "Basic abc", "Bearer ", f"Bearer {user.plaintext}zz"):
        with pytest.raises(InvalidApiKey) as bad:
            await store.require(header)
        assert bad.value.status_code == 401
    assert await store.revoke(user.info.key_id)
    assert not await store.revoke("key_nope")
    with pytest.raises(InvalidApiKey):
        await store.require(f"Bearer {user.plaintext}")
    # Another replica's cache learns it when its entry expires.
    other = KeyStore(redis, prefix=redis_prefix, cache_ttl_s=0)
    assert await other.authenticate(user.plaintext) is None
    listed = {k.key_id: k.revoked for k in await other.list_keys()}
    assert listed == {user.info.key_id: True, admin.info.key_id: False}


async def test_rate_limit_rpm_then_tpm_with_settle(redis, redis_prefix: str) -> None:
    limiter = Limiter(redis, prefix=redis_prefix)
    key = KeyInfo(key_id="key_rpm", team="t-rpm", rpm=5)
    for _ in range(5):
        await limiter.admit(key, 0, 10)
    with pytest.raises(RateLimited) as err:
        await limiter.admit(key, 0, 10)
    assert err.value.status_code == 429
    assert err.value.retry_after is not None and 0 < err.value.retry_after <= 60

    tkey = KeyInfo(key_id="key_tpm", team="t-tpm", tpm=1000)
    first = await limiter.admit(tkey, 0, 600)
    with pytest.raises(RateLimited):
        await limiter.admit(tkey, 0, 600)
    assert await limiter.settle(first, 0, 100)  # the real call used 100, not 600
    await limiter.admit(tkey, 0, 600)


async def test_budget_429_settle_once_and_stale_reservations(redis, redis_prefix: str) -> None:
    store = KeyStore(redis, prefix=redis_prefix)
    key = (await store.create_key("gamma", budget_usd="0.001")).info  # 1_000_000 nano
    limiter = Limiter(redis, prefix=redis_prefix, reservation_ttl_s=1)
    res = await limiter.admit(key, 400_000, 0)
    assert (res.budget_nano, res.spent_nano, res.reserved_nano) == (10**6, 0, 400_000)
    assert res.used_fraction == pytest.approx(0.4)
    assert await limiter.settle(res, 300_000, 0)
    assert not await limiter.settle(res, 300_000, 0)  # a retried settle counts once
    status = await limiter.status("gamma")
    assert (status.spent_nano, status.reserved_nano, status.budget_nano) == (300_000, 0, 10**6)
    await limiter.admit(key, 800_000, 0)  # held by a "crashed" replica: never settled
    with pytest.raises(BudgetExceeded) as err:
        await limiter.admit(key, 1, 0)
    assert err.value.status_code == 429 and "budget" in err.value.message
    await asyncio.sleep(1.1)
    await limiter.admit(key, 1, 0)  # the stale reservation was released


async def test_budget_holds_under_32_concurrent_in_process(redis, redis_prefix: str) -> None:
    store = KeyStore(redis, prefix=redis_prefix)
    key = (await store.create_key("delta", budget_usd="0.0105")).info  # 10.5 M nano
    rng = random.Random(11)
    max_cost = 1_000_000

    async def one(i: int) -> int:
        limiter = Limiter(redis, prefix=redis_prefix)
        try:
            res = await limiter.admit(key, max_cost, 0)
        except BudgetExceeded:
            return 0
        await asyncio.sleep(rng.uniform(0, 0.02))
        actual = rng.randint(max_cost // 2, max_cost)
        await limiter.settle(res, actual, 0)
        return actual

    costs = await asyncio.gather(*(one(i) for i in range(32)))
    status = await Limiter(redis, prefix=redis_prefix).status("delta")
    assert status.spent_nano == sum(costs)
    assert status.reserved_nano == 0
    # Reservations at the estimate admit at least ceil(10.5) and cannot overshoot by more
    # than one request; real costs below the estimate leave budget unused, never exceeded.
    assert sum(1 for c in costs if c) >= 11
    assert sum(costs) <= 10_500_000 + max_cost


_WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    from router.finance.budgets import Limiter
    from router.errors import BudgetExceeded
    from router.finance.keys import KeyInfo
    from router.finance.redis_server import make_client

    url, prefix = sys.argv[1], sys.argv[2]
    n, cost, procs = (int(x) for x in sys.argv[3:6])

    async def main():
        redis = make_client(url)
        await redis.incr(prefix + ":ready")
        while int(await redis.get(prefix + ":ready")) < procs:
            await asyncio.sleep(0.005)
        limiter = Limiter(redis, prefix=prefix)
        key = KeyInfo(key_id="key_mp", team="epsilon")

        async def one():
            try:
                res = await limiter.admit(key, cost, 0)
            except BudgetExceeded:
                return 0
            await asyncio.sleep(0.01)
            await limiter.settle(res, cost, 0)
            return 1

        print(json.dumps(sum(await asyncio.gather(*(one() for _ in range(n))))))
        await redis.aclose()

    asyncio.run(main())
    """
)


async def test_budget_holds_across_processes(redis, redis_url: str, redis_prefix: str) -> None:
    """4 processes x 8 concurrent requests of $0.001 each against a $0.0105 budget."""
    store = KeyStore(redis, prefix=redis_prefix)
    await store.set_budget("epsilon", "0.0105", "month")
    cost, procs = 1_000_000, 4
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WORKER,
            redis_url,
            redis_prefix,
            "8",
            str(cost),
            str(procs),
            stdout=subprocess.PIPE,
            env=env,
        )
        for _ in range(procs)
    ]
    outs = [await asyncio.wait_for(w.communicate(), 30) for w in workers]
    assert all(w.returncode == 0 for w in workers)
    admitted = sum(json.loads(out) for out, _ in outs)
    status = await Limiter(redis, prefix=redis_prefix).status("epsilon")
    # Admission stops once spent + in-flight covers the budget: exactly ceil(10.5) requests.
    assert admitted == 11
    assert status.spent_nano == 11 * cost <= 10_500_000 + cost
    assert status.reserved_nano == 0
