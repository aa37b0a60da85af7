"""Where a running gateway can be reached (issue 20): `slm-router serve` writes one small JSON file
per gateway name, and `policy apply` / `classifier-rollout` read it, so a second shell needs no
`--address`. A start also reaps what a `kill -9`-ed run of the same name left (issue 14.1)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from router.finance.redis_server import pid_alive as pid_alive  # one check for both

# Exit status of an ops command when no gateway runs (documented in docs/OPERATIONS.md).
EXIT_NO_GATEWAY = 3
DEFAULT_NAME = "default"


class NoGateway(RuntimeError):
    """No live gateway of that name, and no --address / RAY_ADDRESS given."""


@dataclass(frozen=True)
class GatewayInfo:
    name: str
    pid: int
    ray_address: str
    serve_url: str
    session_dir: str | None = None
    redis_pid: int | None = None
    admin_url: str | None = None  # no admin HTTP route yet (docs/OPERATIONS.md says why)
    dataplane_dir: str | None = None  # its HAProxy's folder: HAProxy outlives a kill -9


def gateway_name(name: str | None = None) -> str:
    return name or os.environ.get("SLM_ROUTER_GATEWAY") or DEFAULT_NAME


def runtime_dir() -> Path:
    """$XDG_RUNTIME_DIR/slm-router (per-user tmpfs, gone at logout), else the data dir."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and Path(xdg).is_dir():
        return Path(xdg) / "slm-router"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "slm-router" / "run"


def path_for(name: str | None = None) -> Path:
    return runtime_dir() / f"{gateway_name(name)}.json"


def write(info: GatewayInfo) -> Path:
    path = path_for(info.name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(info), indent=1))
    tmp.replace(path)  # readers never see half a file
    return path


def read(name: str | None = None) -> GatewayInfo | None:
    try:
        return GatewayInfo(**json.loads(path_for(name).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def remove(name: str | None = None, pid: int | None = None) -> None:
    """Remove the file, only if it is still ours (`pid`), never a newer gateway's."""
    info = read(name)
    if info is not None and (pid is None or info.pid == pid):
        with contextlib.suppress(OSError):
            path_for(name).unlink()


def reachable(address: str, timeout_s: float = 1.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def resolve_address(explicit: str | None, name: str | None = None) -> str:
    """--address, else $RAY_ADDRESS, else the live gateway's recorded Ray address; never Ray's
    "auto" (it can pick this host's non-loopback address and hang 35 s)."""
    if explicit or os.environ.get("RAY_ADDRESS"):
        return explicit or os.environ["RAY_ADDRESS"]
    info = read(name)
    where = path_for(name)
    if info is None:
        raise NoGateway(
            f"no gateway '{gateway_name(name)}' running ({where} not found); "
            "start one with `slm-router serve`, or pass --address"
        )
    if not pid_alive(info.pid) or not reachable(info.ray_address):
        raise NoGateway(
            f"gateway '{info.name}' (pid {info.pid}) is not running; "
            f"stale {where}; pass --address to reach another Ray"
        )
    # The gateway's ray.init turned token auth on (token in ~/.ray/auth_token): clients need it.
    if (Path.home() / ".ray" / "auth_token").exists():
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    return info.ray_address


def _session_processes(session_dir: str | None, leader: int) -> list[int]:
    """Ray's processes of a dead gateway: those naming its session, and the rest of its process
    group (Ray's agents retitle themselves "ray::DashboardAgent", so their command line no longer
    names the session). A group id is not reused while the group has a member, so a process
    whose group is the dead gateway's pid is one of its own."""
    import psutil

    session = Path(session_dir).name if session_dir else None
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error, OSError):
            pid = int(proc.info["pid"])
            named = session is not None and any(session in a for a in proc.info["cmdline"] or [])
            if pid != os.getpid() and (named or os.getpgid(pid) == leader):
                pids.append(pid)
    return pids


def _is_redis(pid: int) -> bool:
    import psutil

    with contextlib.suppress(psutil.Error):
        return "redis-server" in " ".join(psutil.Process(pid).cmdline())
    return False


def remove_session_dir(session_dir: str | None) -> None:
    """A stopped gateway's Ray session folder (logs, sockets): Ray never removes it."""
    if session_dir and Path(session_dir).name.startswith("session_2"):
        shutil.rmtree(session_dir, ignore_errors=True)


def reap_dead(name: str | None = None) -> list[str]:
    """What a dead (kill -9) gateway of this name left: its Ray session's processes, its embedded
    Redis, its session folder and file. Only processes named by that file's session or pid."""
    info = read(name)
    if info is None or pid_alive(info.pid):
        return []
    done = []
    pids = _session_processes(info.session_dir, info.pid)
    if info.redis_pid and pid_alive(info.redis_pid) and _is_redis(info.redis_pid):
        pids.append(info.redis_pid)
    for pid in pids:  # Ray's: SIGKILL; Redis: SIGTERM, so it fsyncs its append-only file
        sig = signal.SIGTERM if pid == info.redis_pid else signal.SIGKILL
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            done.append(str(pid))
    for _ in range(50):  # a new start must not attach to the Redis on its way out
        if not any(pid_alive(p) for p in pids):
            break
        time.sleep(0.1)
    if info.dataplane_dir:  # Serve's HAProxy is not in Ray's session: found by its folder
        from router.serving.dataplane import cleanup, pids_using

        done += [str(pid) for pid in pids_using(Path(info.dataplane_dir))]
        cleanup(Path(info.dataplane_dir))
    remove_session_dir(info.session_dir)
    remove(name, info.pid)
    return done


def ray_session() -> tuple[str, str | None]:
    """This driver's Ray GCS address and, when it started Ray itself, its session folder."""
    import ray
    from ray._private import worker

    address = ray.get_runtime_context().gcs_address
    node = worker._global_node
    if node is None or not node.head:
        return address, None
    return address, node.get_session_dir_path()


def record(
    serve_url: str, redis_pid: int | None, dataplane_dir: Path | None = None
) -> tuple[Path, GatewayInfo]:
    address, session_dir = ray_session()
    info = GatewayInfo(
        gateway_name(),
        os.getpid(),
        address,
        serve_url,
        session_dir,
        redis_pid,
        dataplane_dir=str(dataplane_dir) if dataplane_dir else None,
    )
    return write(info), info
