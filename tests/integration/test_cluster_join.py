"""`RAY_ADDRESS=... slm-router serve` joins a running Ray cluster (issue 16.4): a head started
with `ray start --head`, token auth on, already running another Serve app that belongs to
someone else. The real CLI joins it (no Ray of its own), answers the stock openai client, and on
SIGTERM/SIGINT exits 0 having removed only what it brought: its Serve app and its embedded
Redis. The cluster and the other app keep running, and a second gateway joins the same head.

The head runs in its own process session and temp dir; only what this test started is killed,
never `ray stop` (it stops every Ray on the machine). Run it under the shared lock
(notes/HELPERS.md)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import psutil
import pytest
import yaml

from tests.integration.conftest import free_port
from tests.integration.test_cli_process import _session_left, _wait_empty, _wait_ready
from tests.integration.test_cluster import Cluster, _up, _wait

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "tests" / "policies" / "fake.yaml"
BIN = Path(sys.executable).parent

# Someone else's app on the cluster, deployed by its own driver before the gateway joins.
OTHER_APP = """
import sys
import ray
from ray import serve

ray.init(address=sys.argv[1])
serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[2])})

@serve.deployment(ray_actor_options={"num_cpus": 0})
def other(request):
    return "other app"

serve.run(other.bind(), name="other", route_prefix="/other")
"""


@pytest.fixture(scope="module")
def head() -> Iterator[tuple[Cluster, int]]:
    """A one-node cluster with token auth, and the Serve HTTP port its other app listens on."""
    tmp = Path(tempfile.mkdtemp(prefix="slmj", dir="/tmp"))  # short: unix socket path limits
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "REDIS_URL")}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(16),
        RAY_USAGE_STATS_ENABLED="0",
    )
    c = Cluster(env, tmp)
    http = free_port()
    c.start_head()
    try:
        _wait(lambda: _up(c.dashboard), 60, "head dashboard")
        c.run(str(sys.executable), "-c", OTHER_APP, c.gcs, str(http), timeout=120)
        _wait(lambda: _other_answers(http), 60, "the other app")
        yield c, http
    finally:
        c.stop()


def _other_answers(http: int) -> bool:
    try:
        r = httpx.get(f"http://127.0.0.1:{http}/other", timeout=5, trust_env=False)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and r.text == "other app"


def _serve_apps(c: Cluster) -> set[str]:
    out = c.run(str(BIN / "serve"), "status", "-a", c.dashboard)
    return set((yaml.safe_load(out) or {}).get("applications") or {})


def _start_cli(c: Cluster, http: int, tmp: Path) -> tuple[subprocess.Popen[bytes], Path]:
    env = dict(c.env, RAY_ADDRESS=c.gcs)
    env["XDG_DATA_HOME"] = str(tmp / "data")  # a private embedded Redis
    env["SLM_ROUTER_SPOOL_DIR"] = str(tmp / "spool")
    (tmp / "run").mkdir(exist_ok=True)
    env["XDG_RUNTIME_DIR"] = str(tmp / "run")  # a private runtime file
    log = tmp / "serve.log"
    argv = [str(BIN / "slm-router"), "serve", "--policy", str(POLICY), "--port", str(http)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return proc, log


def _chat(url: str) -> tuple[str, str]:
    with httpx.Client(trust_env=False, timeout=60) as http:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, http_client=http)
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "write a python function"}]
        )
        text = raw.parse().choices[0].message.content or ""
        return text, raw.headers.get("x-slm-router-expert", "")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_joins_cluster_and_leaves_it_running(
    head: tuple[Cluster, int], tmp_path: Path, sig: signal.Signals
) -> None:
    c, http = head
    t0 = time.monotonic()
    proc, log = _start_cli(c, http, tmp_path)
    url = f"http://127.0.0.1:{http}"
    try:
        _wait_ready(proc, url, log, timeout_s=240)
        ready = time.monotonic() - t0
        # Joined, not started: the head's GCS is recorded, and no Ray of its own runs.
        record = tmp_path / "run" / "slm-router" / "default.json"
        _wait(record.exists, 30, "the runtime file")  # written just after /readyz says 200
        info = json.loads(record.read_text())
        text = log.read_text()
        assert info["ray_address"] == c.gcs, info
        assert info["session_dir"] is None, info  # no session folder of its own to remove
        assert f"ray at {c.gcs}" in text, text[-4000:]
        own = [p for p in _session_left(proc.pid) if "gcs_server" in p or "raylet" in p]
        assert own == [], own
        assert info["redis_pid"] and psutil.pid_exists(info["redis_pid"]), info
        assert {"slm-router", "other"} <= _serve_apps(c)

        answer, expert = _chat(url)
        assert answer and expert == "code-fake", (answer, expert)

        t_sig = time.monotonic()
        proc.send_signal(sig)
        rc = proc.wait(timeout=90)
        took = time.monotonic() - t_sig
        left = _wait_empty(proc.pid, timeout_s=30)
        text = log.read_text()
        print(f"\njoined, ready in {ready:.1f}s; {sig.name}: exit {rc}, stopped in {took:.1f}s")
        assert rc == 0, text[-4000:]
        assert "slm-router: stopped" in text, text[-4000:]
        assert "Traceback" not in text, text[-4000:]
        assert left == [], "\n".join(left)  # the embedded redis-server among them
        assert not psutil.pid_exists(info["redis_pid"]), info
        # The cluster is someone else's: it and its other app keep running; ours is gone.
        assert c.procs[0].poll() is None, "the joined head was stopped"
        assert _serve_apps(c) == {"other"}
        assert _other_answers(http)
    finally:
        if proc.poll() is None:
            proc.kill()
        for line in _session_left(proc.pid):  # only when the test already failed
            os.kill(int(line.split()[0]), signal.SIGKILL)
