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


def ray_node_dead(wait_s: float = 1.0) -> bool:
    """True when this driver started Ray and its GCS or raylet died (SIGTERM to the whole process
    group reaches them too; they take a moment to exit, hence the short wait): serve.shutdown and
    ray.shutdown would then wait on a dead controller and GCS."""
    node = _own_node()
    if node is None:
        return False
    vital = ("gcs_server", "raylet")  # ray_constants.PROCESS_TYPE_*
    for _ in range(max(1, int(wait_s / 0.1))):
        with contextlib.suppress(Exception):
            if any(kind in vital for kind, _proc in node.dead_processes()):
                return True
        time.sleep(0.1)
    return False


def kill_ray_processes() -> None:
    """What is left of the Ray we started once its GCS is gone (what ray.shutdown would do)."""
    node = _own_node()
    if node is not None:
        with contextlib.suppress(Exception):
            node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)


def bounded(fn: Callable[[], None], timeout_s: float) -> bool:
    """Run `fn` for at most `timeout_s` (a daemon thread); False if it did not return in time."""
    done = threading.Event()

    def run() -> None:
        try:
            fn()
        finally:
            done.set()

    threading.Thread(target=run, name="slm-stop", daemon=True).start()
    return done.wait(timeout_s)
