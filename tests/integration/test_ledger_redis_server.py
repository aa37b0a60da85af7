"""The embedded redis-server: start, persistence across restarts, sharing a data dir, stop."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from router.finance.redis_server import (
    EmbeddedRedis,
    RedisServerError,
    _ping,
    make_client,
    resolve_redis_url,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]


async def _set(url: str, key: str, value: str) -> None:
    client = make_client(url)
    await client.set(key, value)
    await client.aclose()


async def _get(url: str, key: str) -> str | None:
    client = make_client(url)
    try:
        return await client.get(key)
    finally:
        await client.aclose()


async def test_data_survives_a_restart(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path)
    url = first.start()
    await _set(url, "k", "v1")
    first.stop()
    assert not first.running and not _ping("127.0.0.1", first.port or 0)
    with EmbeddedRedis(tmp_path) as url2:
        assert await _get(url2, "k") == "v1"
    assert (tmp_path / "appendonlydir").is_dir()


async def test_second_user_of_a_data_dir_shares_the_server(tmp_path: Path) -> None:
    owner = EmbeddedRedis(tmp_path)
    url = owner.start()
    try:
        other = EmbeddedRedis(tmp_path)
        assert other.start() == url
        other.stop()  # not the owner: the server keeps running
        assert _ping("127.0.0.1", owner.port or 0)
        await _set(url, "k", "still-up")
    finally:
        owner.stop()
    assert not (tmp_path / "embedded.json").exists()
    # A stale state file (server gone) is ignored.
    (tmp_path / "embedded.json").write_text('{"pid": 999999, "port": 1}')
    with EmbeddedRedis(tmp_path) as url3:
        assert await _get(url3, "k") == "still-up"


async def test_missing_binary_and_url_resolution(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(RedisServerError, match="not found"):
        EmbeddedRedis(tmp_path, binary=str(tmp_path / "no-redis")).start()
    monkeypatch.setenv("REDIS_URL", "redis://example:6379/0")
    assert resolve_redis_url() == ("redis://example:6379/0", None)
    assert resolve_redis_url("redis://x:1/0") == ("redis://x:1/0", None)
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    url, server = resolve_redis_url()
    try:
        assert server is not None and url == server.url
        assert server.data_dir == tmp_path / "xdg" / "slm-router" / "redis"
    finally:
        assert server is not None
        server.stop()
