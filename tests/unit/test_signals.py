"""The stop path's helpers (issue 14.1): a bounded wait cut short when Ray's node goes down, and
HAProxy's soft stop, on real threads and a real child process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from router.serving import dataplane
from router.serving.signals import bounded, stop_serve


def test_bounded_returns_true_when_done() -> None:
    assert bounded(lambda: None, timeout_s=30)


def test_bounded_gives_up_when_aborted() -> None:
    release = threading.Event()
    try:
        t0 = time.monotonic()
        assert not bounded(release.wait, timeout_s=60, abort=lambda: True)
        assert time.monotonic() - t0 < 30  # not the 60 s timeout (generous on a loaded box)
    finally:
        release.set()


def test_bounded_times_out() -> None:
    release = threading.Event()
    try:
        assert not bounded(release.wait, timeout_s=0.2)
    finally:
        release.set()


def test_stop_serve_without_own_ray_runs_shutdown() -> None:
    # No Ray started in this process: the node is never "dead", Serve's shutdown runs.
    ran, said = [], []
    assert stop_serve(lambda: ran.append(1), 30, said.append) is False
    assert ran == [1] and said == []


def test_drain_soft_stops_what_runs_from_the_folder(tmp_path: Path) -> None:
    # SIGUSR1's default action ends a process that does not handle it, as HAProxy's soft stop
    # ends HAProxy once nothing is in flight.
    cfg = tmp_path / "haproxy.cfg"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", str(cfg)])
    try:
        deadline = time.monotonic() + 30
        while proc.pid not in dataplane.pids_using(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        dataplane.drain(tmp_path, grace_s=30)
        assert proc.wait(timeout=30) == -10  # SIGUSR1
        assert dataplane.pids_using(tmp_path) == []
    finally:
        proc.kill()
        proc.wait()


def test_drain_without_folder_is_a_no_op() -> None:
    dataplane.drain(None, grace_s=30)
