"""SIGINT and SIGTERM for `slm-router serve` (issue 14.1): systemd, Docker and Kubernetes stop a
service with SIGTERM, so it must do what Ctrl-C does; a second signal forces a fast exit."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any


class Stop(BaseException):
    """Raised by the handler while the gateway is still starting, to unwind into the `finally`
    that stops whatever did start (BaseException: no `except Exception` swallows it)."""


class Signals:
    """The first SIGINT/SIGTERM asks for a clean stop; a second one calls `force` (stop the
    embedded Redis, exit 1; Ray's own processes die with us through their parent-death signal)."""

    def __init__(self, force: Callable[[], None]) -> None:
        self.stop = threading.Event()
        self.starting = True
        self._force = force

    def install(self) -> None:
        _ACTIVE[:] = [self]
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.stop.is_set():
            print(
                f"slm-router: {signal.Signals(signum).name} again: forcing exit",
                file=sys.stderr,
                flush=True,
            )
            self._force()
            os._exit(1)
        self.stop.set()
        if self.starting:
            raise Stop()

    def wait(self, tick: Callable[[], None] | None) -> None:
        while not self.stop.wait(0.5):
            if tick is not None:
                tick()


_ACTIVE: list[Signals] = []


def reinstall() -> None:
    """Right after ray.init, which puts its own SIGTERM handler (sys.exit(15)) in place."""
    if _ACTIVE:
        _ACTIVE[0].install()


def stop_embedded(servers: list[Any]) -> None:
    while servers:
        with contextlib.suppress(Exception):  # exiting anyway; nothing better to do with it
            servers.pop().stop()


def _own_node() -> Any | None:
    with contextlib.suppress(Exception):  # private API: on any change, treat Ray as joined
        from ray._private import worker

        node = worker._global_node
        if node is not None and node.head:
            return node
    return None


def node_dead() -> bool:
    """True when this driver started Ray and that node is going down (checked now): its GCS or
    raylet has exited, or the GCS no longer accepts connections. A group SIGTERM reaches both:
    the GCS closes its port at once but its process lingers, the raylet drains for ~10 s."""
    node = _own_node()
    if node is None:
        return False
    from router.serving.gateway_file import reachable

    vital = ("gcs_server", "raylet")  # ray_constants.PROCESS_TYPE_*
    with contextlib.suppress(Exception):
        if any(kind in vital for kind, _proc in node.dead_processes()):
            return True
        return not reachable(str(node.gcs_address), timeout_s=0.5)
    return False


def ray_node_dead(wait_s: float = 1.0) -> bool:
    """node_dead(), waiting up to `wait_s` for it: SIGTERM to the whole process group reaches
    Ray's processes too, and they take a moment to exit."""
    deadline = time.monotonic() + wait_s
    while not node_dead():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def stop_serve(shutdown: Callable[[], None], grace_s: float, say: Callable[[str], None]) -> bool:
    """Run Serve's orderly shutdown for at most `grace_s`, given up as soon as the raylet or GCS
    we started exits; True when Ray's node is dead (the caller then kills what is left).

    A group SIGTERM reaches the raylet and GCS as well as us: serve.shutdown then talks to a
    cluster on its way out and would wait out the whole grace period (issue 14.1)."""
    if node_dead():
        say("ray's processes already got the signal; skipping serve shutdown")
        return True
    finished = bounded(shutdown, grace_s, abort=node_dead)
    if ray_node_dead(0.0 if finished else 1.0):
        say("ray's processes got the signal too (process group); finishing our own cleanup")
        return True
    if not finished:
        say(f"serve shutdown exceeded the {grace_s:.0f}s grace period; stopping ray")
    return False


def kill_ray_processes() -> None:
    """What is left of the Ray we started once it is going down (what ray.shutdown would do):
    the processes the driver started, then what the raylet started. Ray 2.60 runs each worker in
    a process group of its own, so a group SIGTERM misses the Serve controller, the replicas and
    the HAProxy that Serve's HAProxyManager runs; they are found as the raylet's descendants."""
    import psutil

    node = _own_node()
    if node is None:
        return
    spawned: list[psutil.Process] = []
    with contextlib.suppress(Exception):  # private API, as above
        for _kind, proc in node.live_processes():
            with contextlib.suppress(psutil.Error):
                spawned += psutil.Process(proc.pid).children(recursive=True)
    with contextlib.suppress(Exception):
        node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
    for child in spawned:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(spawned, timeout=5)


def bounded(
    fn: Callable[[], None], timeout_s: float, abort: Callable[[], bool] | None = None
) -> bool:
    """Run `fn` for at most `timeout_s` (a daemon thread), or until `abort()` answers True
    (polled every 0.1 s); False if it did not return in time."""
    done = threading.Event()

    def run() -> None:
        try:
            fn()
        finally:
            done.set()

    threading.Thread(target=run, name="slm-stop", daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not done.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
        if time.monotonic() >= deadline or (abort is not None and abort()):
            return False
    return True
