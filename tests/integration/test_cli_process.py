"""`slm-router serve` as operators run it (issue 14.1/14.6): a real CLI process in its own session,
stopped with SIGTERM to its pid or to its group; it must print "stopped", exit 0 and leave no
process of its session behind (embedded redis-server, raylet, GCS, Ray agents, workers, HAProxy)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "tests" / "policies" / "fake.yaml"
CLI = Path(sys.executable).with_name("slm-router")


def _start(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "REDIS_URL")}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")  # a private embedded Redis
    env["SLM_ROUTER_SPOOL_DIR"] = str(tmp_path / "spool")
    (tmp_path / "run").mkdir(exist_ok=True)
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "run")  # a private runtime file (issue 20)
    log = tmp_path / "serve.log"
    argv = [str(CLI), "serve", "--policy", str(POLICY), "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return proc, f"http://127.0.0.1:{port}", log


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-4000:]
        try:
            if httpx.get(f"{url}/readyz", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail("gateway never ready:\n" + log.read_text()[-4000:])


def _session_left(sid: int) -> list[str]:
    left = []
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{p.pid} {' '.join(p.info['cmdline'] or [p.info['name']])[:120]}")
        except (ProcessLookupError, psutil.Error):
            continue
    return left


def _wait_empty(sid: int, timeout_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while (left := _session_left(sid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _kill_session(sid: int) -> None:  # cleanup only when the test already failed
    for line in _session_left(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split()[0]), signal.SIGKILL)


# "group": what some supervisors and a closing terminal do. Ray's raylet and GCS get the signal too
# and start going down while the CLI stops; Ray's workers and HAProxy (own process groups) do not.
@pytest.mark.parametrize("target", ["pid", "group"])
def test_sigterm_stops_cleanly(tmp_path: Path, target: str) -> None:
    proc, url, log = _start(tmp_path)
    try:
        _wait_ready(proc, url, log, timeout_s=240)
        t0 = time.monotonic()
        if target == "pid":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        rc = proc.wait(timeout=90)
        took = time.monotonic() - t0
        left = _wait_empty(proc.pid, timeout_s=30)
        text = log.read_text()
        print(f"SIGTERM to {target}: exit {rc} in {took:.1f}s, {len(left)} left")
        assert left == [], "\n".join(left)
        assert "Traceback" not in text, text[-4000:]
        assert "slm-router: stopped" in text, text[-4000:]
        assert rc == 0, text[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill_session(proc.pid)
