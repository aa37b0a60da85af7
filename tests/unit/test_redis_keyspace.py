"""Key names on one Redis (unchanged) and on a cluster (one hash slot per team), and the
`cluster=true` URL setting. No server needed: slots are computed as Redis computes them."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from router.finance.budgets import Limiter
from router.finance.keyspace import KeySpace, is_cluster
from router.finance.ledger import Ledger
from router.finance.ledger_types import CostRecord
from router.finance.redis_server import make_client, split_cluster_flag


def _slot(key: str) -> int:
    return int(key_slot(key.encode()))


def test_single_redis_names_stay_as_they_were() -> None:
    s = KeySpace("slm")
    assert s.team_config("acme") == "slm:team:acme"
    assert s.spend("acme", "2026-12") == "slm:spend:acme:2026-12"
    assert s.agg(s.ledger_scope("acme"), "2026-12-07") == "slm:agg:2026-12-07"
    assert s.record("r1") == "slm:req:r1"


def test_cluster_names_carry_the_team_tag() -> None:
    s = KeySpace("slm", cluster=True)
    assert s.team_config("acme") == "slm:team:{acme}"
    assert s.rate("acme", "key_1") == "slm:rl:{acme}:key_1"
    assert s.team("we{ir}d") == "{we_ir_d}"  # a brace in a name cannot move the tag
    with pytest.raises(ValueError, match="braces"):
        KeySpace("a{b}", cluster=True)


def _admit_and_settle_keys(s: KeySpace, team: str) -> list[str]:
    day, month = s.spend(team, "2026-12-07"), s.spend(team, "2026-12")
    return [
        s.team_config(team),
        *(day, day + ":res", day + ":exp", month, month + ":res", month + ":exp"),
        s.rate(team, "key_x"),
        s.settled(team, "res1"),
    ]


def test_each_scripts_keys_share_one_slot_per_team_on_a_cluster(tmp_path: Path) -> None:
    s = KeySpace("slm", cluster=True)
    per_team = {t: {_slot(k) for k in _admit_and_settle_keys(s, t)} for t in ("a", "b", "c")}
    assert all(len(slots) == 1 for slots in per_team.values())
    assert len({next(iter(v)) for v in per_team.values()}) == 3  # teams spread over slots
    rec = CostRecord(request_id="r9", ts=1.8e9, team="a", expert="e", domain="d")
    cluster = make_client("redis://127.0.0.1:1/0?cluster=true")  # connects lazily
    ledger = Ledger("", tmp_path / "spool.jsonl", client=cluster)
    keys = ledger._keys(rec)
    assert len(keys) == 5 and {_slot(k) for k in keys} == per_team["a"]
    # Without tags (one Redis) the same keys fall in several slots: the names are what counts.
    flat = KeySpace("slm")
    assert len({_slot(k) for k in _admit_and_settle_keys(flat, "a")}) > 1


def test_cluster_flag_in_the_url() -> None:
    assert split_cluster_flag("redis://h:1/0") == ("redis://h:1/0", False)
    assert split_cluster_flag("redis://h:1/0?cluster=true") == ("redis://h:1/0", True)
    assert split_cluster_flag("rediss://u:p@h:1/0?cluster=yes&ssl_cert_reqs=none") == (
        "rediss://u:p@h:1/0?ssl_cert_reqs=none",
        True,
    )
    assert split_cluster_flag("redis://h:1/0?cluster=false")[1] is False
    with pytest.raises(ValueError, match="cluster="):
        split_cluster_flag("redis://h:1/0?cluster=maybe")


def test_make_client_picks_the_client_kind() -> None:
    cluster = make_client("redis://127.0.0.1:1/0?cluster=true")  # connects lazily
    single = make_client("redis://127.0.0.1:1/0")
    assert isinstance(cluster, RedisCluster) and is_cluster(cluster)
    assert isinstance(single, Redis) and not is_cluster(single)
    assert Limiter(cluster).space.cluster and not Limiter(single).space.cluster


def test_make_sync_client_picks_the_client_kind() -> None:
    from redis import Redis as SyncRedis
    from redis.exceptions import RedisClusterException, RedisError

    from router.finance.redis_server import make_sync_client

    assert isinstance(make_sync_client("redis://127.0.0.1:1/0"), SyncRedis)
    # The sync cluster client looks for the cluster's nodes at once (none on port 1); redis-py 5
    # (the floor) lacks RedisClusterUnreachableError, so its bases are matched.
    with pytest.raises((RedisError, RedisClusterException)):
        make_sync_client("redis://127.0.0.1:1/0?cluster=true")
