"""An embedded `redis-server` for laptops and tests, and the one way we build Redis clients.

When REDIS_URL is unset the gateway starts Debian's `redis-server` on a free loopback port with
append-only persistence under the user's data dir, so the ledger survives restarts without any
set-up. The process is ours: we stop it on shutdown (SHUTDOWN, then SIGTERM, then SIGKILL).

Redis Cluster: a URL with `cluster=true` in its query (`redis://10.0.0.5:6379/0?cluster=true`,
any one node of the cluster) gets redis-py's RedisCluster client, which finds the other nodes,
follows MOVED/ASK and splits non-transactional pipelines by node. Keys are then hash-tagged per
team (router.finance.keyspace).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.exceptions import RedisError

if TYPE_CHECKING:
    from redis import Redis as SyncRedis
    from redis.asyncio import Redis

DEFAULT_BINARY = "redis-server"


class RedisServerError(RuntimeError):
    """The embedded redis-server could not be started."""


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "slm-router" / "redis"


def free_port(host: str = "127.0.0.1") -> int:
    # The port can in theory be taken between this and redis binding it; start() retries.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _client(host: str, port: int, timeout_s: float) -> SyncRedis:
    """A short-lived synchronous client: readiness and shutdown run outside any event loop."""
    from redis import Redis as _SyncRedis

    return _SyncRedis(
        host=host, port=port, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )


def _ping(host: str, port: int, timeout_s: float = 0.2) -> bool:
    try:
        with _client(host, port, timeout_s) as r:
            return bool(r.ping())
    except (RedisError, OSError):
        return False


def pid_alive(pid: int) -> bool:
    """The process exists (a PermissionError means it does, as another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _shutdown(host: str, port: int, timeout_s: float = 2.0) -> None:
    """SHUTDOWN fsyncs the AOF before exiting; redis-py raises once the server hangs up."""
    with contextlib.suppress(RedisError, OSError), _client(host, port, timeout_s) as r:
        r.shutdown()


class EmbeddedRedis:
    """`with EmbeddedRedis(dir) as url:` or `.start() -> url` / `.stop()`."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: str | None = None,
        appendonly: bool = True,
        start_timeout_s: float = 10.0,
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.host = host
        self.port = port
        self.binary = binary or shutil.which(DEFAULT_BINARY) or "/usr/bin/redis-server"
        self.appendonly = appendonly
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._attached = False

    @property
    def url(self) -> str:
        if self.port is None:
            raise RedisServerError("not started")
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _argv(self, port: int) -> list[str]:
        return [
            self.binary,
            "--port", str(port),
            "--bind", self.host,
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip

    @property
    def _state_file(self) -> Path:
        return self.data_dir / "embedded.json"

    def _attach_existing(self) -> bool:
        """Reuse a live server another process of ours started on this data dir.

        Two servers appending to one AOF would corrupt it; the first process owns the server and
        later ones (a second CLI, a restarted driver) share it and never stop it.
        """
        try:
            state = json.loads(self._state_file.read_text())
            pid, port = int(state["pid"]), int(state["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if not pid_alive(pid) or not _ping(self.host, port):
            return False
        self.port, self._attached = port, True
        return True

    def start(self) -> str:
        if self.running or self._attached:
            return self.url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._attach_existing():
            return self.url
        if not Path(self.binary).exists():
            raise RedisServerError(
                f"{self.binary} not found: install Debian's redis-server "
                "(scripts/setup.sh does) or set REDIS_URL"
            )
        fixed = self.port
        last_error = ""
        for _ in range(1 if fixed else 5):
            port = fixed or free_port(self.host)
            proc = subprocess.Popen(
                self._argv(port),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            if self._wait_ready(proc, port):
                self._proc, self.port = proc, port
                self._state_file.write_text(json.dumps({"pid": proc.pid, "port": port}))
                return self.url
            last_error = self._reap(proc)
        raise RedisServerError(f"redis-server did not start: {last_error}")

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int) -> bool:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if _ping(self.host, port):
                return True
            time.sleep(0.01)
        return False

    def _reap(self, proc: subprocess.Popen[bytes]) -> str:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=5)
        log = self.data_dir / "redis.log"
        tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
        return (err.decode(errors="replace") + tail).strip()[-500:]

    def stop(self, timeout_s: float = 5.0) -> None:
        self._attached = False
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            self._state_file.unlink()
        if proc.poll() is not None:
            return
        if self.port is not None:
            # plain SIGTERM below fsyncs too, as a fallback
            _shutdown(self.host, self.port)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def resolve_redis_url(url: str | None = None) -> tuple[str, EmbeddedRedis | None]:
    """`url`, else $REDIS_URL, else an embedded server (returned so the caller can stop it).

    Call this once in the driver (the CLI), before Serve starts, and hand the URL to the
    deployments: replicas are separate processes and must share one server.
    """
    url = url or os.environ.get("REDIS_URL") or None
    if url:
        return url, None
    server = EmbeddedRedis()
    return server.start(), server


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
CLUSTER_MAX_CONNECTIONS = 512  # per node and process: RedisCluster refuses, never waits, past it


def split_cluster_flag(url: str) -> tuple[str, bool]:
    """(the URL without its `cluster` query parameter, whether it asked for a cluster).

    redis-py would hand an unknown query parameter to every connection, so ours is taken out.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    flags = [v.strip().lower() for k, v in query if k == "cluster"]
    if not flags:
        return url, False
    if flags[-1] not in _TRUE | _FALSE:
        raise ValueError(f"cluster={flags[-1]!r} in the Redis URL: use true or false")
    rest = urlencode([(k, v) for k, v in query if k != "cluster"])
    return urlunsplit(parts._replace(query=rest)), flags[-1] in _TRUE


def make_client(
    url: str,
    *,
    max_connections: int = 64,
    socket_timeout_s: float = 2.0,
    pool_timeout_s: float = 2.0,
    **kwargs: Any,
) -> Redis:
    """An asyncio client on a BlockingConnectionPool, or a RedisCluster for `cluster=true`.

    redis-py's default pool raises "Too many connections" under bursts; a blocking pool makes a
    burst wait for a free connection instead (up to `pool_timeout_s`). RedisCluster has no
    blocking pool, so it gets a per-node cap that a burst does not reach. It is typed as Redis:
    it speaks every command used here, and router.finance.keyspace.is_cluster tells them apart.
    """
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.cluster import RedisCluster

    url, cluster = split_cluster_flag(url)
    if cluster:
        client = RedisCluster.from_url(
            url,
            max_connections=max(max_connections, CLUSTER_MAX_CONNECTIONS),
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            decode_responses=True,
            **kwargs,
        )
        return cast("Redis", client)
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        decode_responses=True,
        **kwargs,
    )
    return Redis(connection_pool=pool)


def make_sync_client(url: str, *, socket_timeout_s: float = 2.0) -> SyncRedis:
    """A blocking client for threads (e.g. replica metrics), a RedisCluster for `cluster=true`."""
    from redis import Redis as _SyncRedis
    from redis.cluster import RedisCluster

    url, cluster = split_cluster_flag(url)
    if cluster:
        return cast("SyncRedis", RedisCluster.from_url(url, socket_timeout=socket_timeout_s))
    return _SyncRedis.from_url(url, socket_timeout=socket_timeout_s)
