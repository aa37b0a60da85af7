"""The runtime file ops commands find a gateway by (issue 20), without Ray: a missing or stale
gateway is refused quickly with EXIT_NO_GATEWAY and never falls back to Ray's "auto"."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from router.serving import gateway_file as gf

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).with_name("slm-router")


@pytest.fixture()
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("SLM_ROUTER_GATEWAY", raising=False)
    return tmp_path


def _info(pid: int, address: str = "127.0.0.1:1", name: str = "default") -> gf.GatewayInfo:
    return gf.GatewayInfo(name, pid, address, "http://127.0.0.1:8000", None, None)


def test_file_per_name_round_trip(run_dir: Path) -> None:
    path = gf.write(_info(os.getpid(), name="blue"))
    assert path == run_dir / "slm-router" / "blue.json"
    assert gf.read("blue") == _info(os.getpid(), name="blue")
    assert gf.read("green") is None
    gf.remove("blue", pid=os.getpid() + 1)  # not ours: kept
    assert gf.read("blue") is not None
    gf.remove("blue", pid=os.getpid())
    assert gf.read("blue") is None


def test_explicit_address_and_env_win(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert gf.resolve_address("10.0.0.5:6379") == "10.0.0.5:6379"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:7000")
    assert gf.resolve_address(None) == "127.0.0.1:7000"


def test_missing_and_stale_gateway_refused(run_dir: Path) -> None:
    with pytest.raises(gf.NoGateway, match="not found"):
        gf.resolve_address(None)
    dead = subprocess.Popen(["true"])
    dead.wait()
    gf.write(_info(dead.pid))
    with pytest.raises(gf.NoGateway, match="not running"):
        gf.resolve_address(None)
    gf.write(_info(os.getpid(), address="127.0.0.1:1"))  # alive pid, nothing listening
    with pytest.raises(gf.NoGateway, match="not running"):
        gf.resolve_address(None)


def test_reap_dead_removes_session_dir_and_file(run_dir: Path, tmp_path: Path) -> None:
    session = tmp_path / "ray" / "session_2026-01-01_00-00-00_000000_1"
    session.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    gf.write(gf.GatewayInfo("default", dead.pid, "127.0.0.1:1", "u", str(session), None))
    assert gf.reap_dead() == []  # no process of that session runs
    assert not session.exists() and gf.read() is None
    gf.write(_info(os.getpid()))
    assert gf.reap_dead() == [] and gf.read() is not None  # a live gateway is left alone


def test_reap_dead_kills_what_is_left_of_the_dead_gateways_group(run_dir: Path) -> None:
    # A group leader that starts a child and dies, as a kill -9-ed gateway leaves Ray's agents
    # (retitled, so no session folder in their command line) in its process group.
    code = "import subprocess, sys; print(subprocess.Popen(['sleep', '60']).pid, flush=True)"
    leader = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert leader.stdout is not None
    orphan = int(leader.stdout.readline())
    leader.wait()
    try:
        assert gf.pid_alive(orphan) and os.getpgid(orphan) == leader.pid
        gf.write(_info(leader.pid))
        assert gf.reap_dead() == [str(orphan)]
        for _ in range(50):
            if not _running(orphan):
                break
            time.sleep(0.1)
        assert not _running(orphan)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(orphan, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("argv", [["policy", "apply"], ["classifier-rollout", "rollback"]])
def test_cli_without_gateway_exits_fast(run_dir: Path, argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "REDIS_URL")}
    env["XDG_DATA_HOME"] = str(run_dir / "data")
    policy = ROOT / "tests" / "policies" / "fake.yaml"
    args = [str(CLI), *argv, str(policy)] if argv[0] == "policy" else [str(CLI), *argv]
    # timeout: a hang guard (Ray's "auto" waited 35 s), not a speed target
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=20)
    assert out.returncode == gf.EXIT_NO_GATEWAY, out.stderr
    assert "no gateway 'default' running" in out.stderr
