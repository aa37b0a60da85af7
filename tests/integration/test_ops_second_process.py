"""Ops from a second shell (issue 20.4) and a start after `kill -9` (issue 14.1): the gateway runs
as a real CLI subprocess; `policy apply` runs as another process with no --address, under steady
light load; the CLI is then killed with -9 and started again, and must reap what the dead run
left (its Redis, its Ray session, its HAProxy); the second run gets SIGTERM to its pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx

from tests.integration.test_cli_process import CLI, POLICY, _kill_session, _start, _wait_empty
from tests.integration.test_cli_process import _wait_ready as wait_ready


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "REDIS_URL")}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "run")
    return env


class Load(threading.Thread):
    """One request at a time, as a light steady client; every non-200 is a failure."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.ok = url, threading.Event(), 0
        self.failed: list[str] = []

    def run(self) -> None:
        body = {"model": "auto", "messages": [{"role": "user", "content": "what is 2 + 2"}]}
        with httpx.Client(base_url=self.url, timeout=30, trust_env=False) as client:
            while not self.stop.wait(0.05):
                try:
                    r = client.post("/v1/chat/completions", json=body)
                    if r.status_code == 200:
                        self.ok += 1
                    else:
                        self.failed.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failed.append(repr(exc))


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True, timeout=300)


def _models(url: str) -> set[str]:
    r = httpx.get(f"{url}/v1/models", timeout=10, trust_env=False)
    return {m["id"] for m in r.json()["data"]}


def test_apply_from_second_process_then_kill9_restart(tmp_path: Path) -> None:
    env = _env(tmp_path)
    changed = tmp_path / "changed.yaml"
    changed.write_text(
        POLICY.read_text().replace(
            "experts:\n", "experts:\n  extra-fake: {backend: fake, description: added}\n", 1
        )
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(POLICY.read_text().replace("fallback: general-fake", "fallbak: general-fake"))
    proc, url, log = _start(tmp_path)
    second = None
    try:
        wait_ready(proc, url, log, timeout_s=240)
        info = json.loads(_runtime_file(tmp_path, log).read_text())
        assert info["pid"] == proc.pid and info["serve_url"] == url, info
        assert "recorded in" in log.read_text()
        load = Load(url)
        load.start()
        good = _cli(env, "policy", "apply", str(changed))
        assert good.returncode == 0, good.stdout + good.stderr
        invalid = _cli(env, "policy", "apply", str(bad))
        load.stop.set()
        load.join(timeout=60)
        print(f"apply: {good.stdout.strip()}; load: {load.ok} ok, {len(load.failed)} failed")
        assert invalid.returncode == 1, invalid.stdout + invalid.stderr
        assert f"{bad}:" in invalid.stderr and "error" in invalid.stderr, invalid.stderr
        assert load.failed == [] and load.ok > 0, load.failed[:5]
        assert "extra-fake" in _models(
            url
        )  # the valid one applied, the invalid one changed nothing

        os.kill(proc.pid, signal.SIGKILL)  # as an OOM killer or `kill -9` would
        proc.wait(timeout=30)
        assert info["redis_pid"] and _alive(info["redis_pid"])  # left behind, for now
        second, url2, log2 = _start(tmp_path)
        wait_ready(second, url2, log2, timeout_s=240)
        assert "a dead gateway left" in log2.read_text(), log2.read_text()[-3000:]
        assert not _alive(info["redis_pid"])
        assert not Path(info["session_dir"]).exists()
        assert _wait_empty(proc.pid, timeout_s=30) == []  # the dead run's session: nothing left
        # To its pid, as systemd/Docker/Kubernetes stop a service. SIGTERM to the whole group is
        # not clean yet (serve shutdown waits out the grace period, exit 1): issue 14.1, open.
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=90) == 0, log2.read_text()[-3000:]
        assert _wait_empty(second.pid, timeout_s=30) == []
        assert not (tmp_path / "run" / "slm-router" / "default.json").exists()
    finally:
        for p in (proc, second):
            if p is not None:
                if p.poll() is None:
                    p.kill()
                _kill_session(p.pid)


def _runtime_file(tmp_path: Path, log: Path, timeout_s: float = 30) -> Path:
    """The file is written just after /readyz first answers, so wait for it."""
    path = tmp_path / "run" / "slm-router" / "default.json"
    deadline = time.monotonic() + timeout_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert path.exists(), log.read_text()[-3000:]
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is not alive
        return f.read().split(") ")[1][0] != "Z"
