"""Pytest plugin: a real `redis-server` on a free loopback port for the whole session.

Load it from tests/conftest.py (`pytest_plugins = ["conftest_redis"]`, tests/ being on sys.path
there) or with `PYTHONPATH=tests pytest -p conftest_redis`. Tests share the server and isolate
themselves by key prefix (`redis_prefix`), so no test needs FLUSHALL.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.finance.redis_server import EmbeddedRedis


def _binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    binary = _binary()
    if binary is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-data"), binary=binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture
def redis_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A server of the test's own, for tests that stop and restart Redis."""
    binary = _binary()
    if binary is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    server = EmbeddedRedis(tmp_path / "redis-data", binary=binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()
