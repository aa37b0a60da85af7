"""Which Redis an admin command talks to: --redis-url, else $REDIS_URL, else the embedded server
of the default data dir.

The gateway's embedded server records its pid and port in `<data dir>/embedded.json`
(router.finance.redis_server), so a CLI run beside a running gateway attaches to that server;
with no gateway running, the CLI starts the server on the same data dir for the duration of the
command and stops it afterwards (SHUTDOWN fsyncs the append-only file, so the gateway sees the
change on its next start).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

DEFAULT_PREFIX = "slm"


@contextlib.contextmanager
def redis_url_for(args: argparse.Namespace) -> Iterator[str]:
    """The URL to use for this command; an embedded server started here is stopped on exit."""
    from router.finance.redis_server import EmbeddedRedis

    url = getattr(args, "redis_url", None) or os.environ.get("REDIS_URL") or None
    if url:
        yield url
        return
    server = EmbeddedRedis(getattr(args, "data_dir", None))
    url = server.start()  # attaches to the gateway's server when one is running
    try:
        yield url
    finally:
        server.stop()  # a no-op for an attached server: it belongs to the gateway


def run_with_redis(args: argparse.Namespace, body: Callable[[Redis], Awaitable[int]]) -> int:
    """Run `body` with a client on the Redis the args name (or the embedded one); exit 2
    with a message when it can't be reached."""
    from router.finance.redis_server import RedisServerError, make_client

    async def go(url: str) -> int:
        client = make_client(url)
        try:
            return await body(client)
        finally:
            await client.aclose()

    try:
        with redis_url_for(args) as url:
            return asyncio.run(go(url))
    except RedisServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ConnectionError, OSError, TimeoutError) as exc:
        print(f"error: cannot reach Redis ({exc})", file=sys.stderr)
        return 2
    except Exception as exc:
        if type(exc).__module__.startswith("redis"):
            print(f"error: Redis: {exc}", file=sys.stderr)
            return 2
        raise


def add_redis_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", help="default: $REDIS_URL, else the embedded server")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the embedded server's data dir (default: the gateway's, under XDG_DATA_HOME)",
    )
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help=argparse.SUPPRESS)
