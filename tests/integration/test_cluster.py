"""A two-node Ray cluster on loopback, as a user builds one: `ray start --head`, a second
`ray start --address` with a custom resource, token auth on, the project's serve-config output
deployed with Ray's own `serve deploy`. An expert pinned to the worker answers; the worker is
killed (its raylet's process session), requests fall back; the worker comes back, the replica is
rescheduled there, and the time to recover is printed.

Everything runs in subprocesses with their own ports and temp dir, and only the process
sessions this test started are killed: never `ray stop`, which stops every Ray on the machine.
Run it under the shared lock (docs/DEPLOY.md, notes/HELPERS.md)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
DEADLINE_S = 220  # the whole test, cluster start to cleanup
EXPERT_TIMEOUT_S = 4.0

POLICY = """
version: 1
classifier: {{kind: examples, placement: ingress, oos_threshold: 0.3}}
experts:
  pinned:
    backend: local
    model: {tiny}
    max_tokens_default: 4
    timeout_s: {timeout}
    replicas: {{min: 1, max: 1}}
    resources: {{num_cpus: 0.1, custom: {{worker_node: 0.1}}}}
  fallback: {{backend: fake}}
routing:
  fallback: fallback
  overrides:
    - {{name: pin, expert: pinned, keywords: [pintest]}}
  routes:
    - domain: code
      experts: [fallback]
      examples: [write a python function, fix this javascript bug, explain this SQL query]
"""


@dataclass
class Cluster:
    env: dict[str, str]
    tmp: Path
    gcs: str = ""
    dashboard: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """`ray start --block` in its own process session, so it and its raylet/GCS/workers
        can be killed together, and nobody else's Ray."""
        log = (self.tmp / f"ray-start-{len(self.procs)}.log").open("wb")
        cmd = [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", *args]
        p = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log, start_new_session=True)
        self.procs.append(p)
        return p

    def start_head(self) -> subprocess.Popen[bytes]:
        """The head on loopback, every port free-picked (two clusters on one host never clash)."""
        port, dash = free_port(), free_port()
        self.gcs, self.dashboard = f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}"
        return self.start(
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            f"--temp-dir={self.tmp}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        )

    def worker(self) -> subprocess.Popen[bytes]:
        return self.start(
            f"--address={self.gcs}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            '--resources={"worker_node": 1}',
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        )

    def kill(self, p: subprocess.Popen[bytes]) -> None:
        """SIGKILL the node: its session and every descendant (Ray's workers, the replica
        among them, outlive a dead raylet for a while otherwise), as a lost machine would."""
        import psutil

        with contextlib.suppress(psutil.NoSuchProcess):
            kids = psutil.Process(p.pid).children(recursive=True)
            for proc in kids:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)

    def stop(self) -> None:
        for p in reversed(self.procs):
            self.kill(p)
        # Workers Ray forked into another session still name our temp dir.
        out = subprocess.run(["pgrep", "-f", str(self.tmp)], capture_output=True, text=True)
        for pid in out.stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)

    def run(self, *cmd: str, timeout: float = 60) -> str:
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, f"{cmd}: {r.stdout}\n{r.stderr}"
        return r.stdout


def _wait(cond: object, timeout_s: float, what: str, poll_s: float = 0.5) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if cond():  # type: ignore[operator]
            return time.monotonic() - t0
        time.sleep(poll_s)
    raise TimeoutError(f"{what} not within {timeout_s}s")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    # A dir name pgrep can find (and short: Ray's unix socket paths are length-limited).
    tmp = Path(tempfile.mkdtemp(prefix="slmc", dir="/tmp"))
    env = dict(os.environ)
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(16),
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1",  # a 2nd node on one host (see docs/DEPLOY.md)
        RAY_USAGE_STATS_ENABLED="0",
        # Notice a dead node in ~3 s, not Ray's default ~30 s.
        RAY_health_check_period_ms="1000",
        RAY_health_check_timeout_ms="1000",
        RAY_health_check_failure_threshold="3",
    )
    env.pop("RAY_ADDRESS", None)
    c = Cluster(env, tmp)
    c.start_head()
    try:
        _wait(lambda: _up(c.dashboard), 60, "head dashboard")
        yield c
    finally:
        c.stop()


def _up(url: str) -> bool:
    try:
        # Any answer: with token auth on, the dashboard says 401 to a request without it.
        return httpx.get(f"{url}/api/version", timeout=2, trust_env=False).status_code > 0
    except httpx.HTTPError:
        return False


def _ask(client: httpx.Client, url: str) -> tuple[int, str]:
    body = {"model": "auto", "messages": [{"role": "user", "content": "pintest hi"}]}
    try:
        r = client.post(f"{url}/v1/chat/completions", json=body)
    except httpx.HTTPError:
        return -1, ""
    return r.status_code, r.headers.get("x-slm-router-expert", "")


def test_pinned_expert_fails_over_when_its_node_dies_and_returns(
    cluster: Cluster, tiny_model: Path
) -> None:
    t_start = time.monotonic()
    policy = cluster.tmp / "policy.yaml"
    policy.write_text(POLICY.format(tiny=tiny_model, timeout=EXPERT_TIMEOUT_S))
    out = cluster.run(str(BIN / "slm-router"), "serve-config", "--policy", str(policy))
    cfg = yaml.safe_load(out)
    http_port = free_port()
    # Both nodes share 127.0.0.1, so one proxy (on the head) owns the port.
    cfg.update(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": http_port})
    pinned = next(d for d in cfg["applications"][0]["deployments"] if d["name"] == "expert-pinned")
    assert pinned["ray_actor_options"]["resources"] == {"worker_node": 0.1}
    serve_yaml = cluster.tmp / "serve.yaml"
    serve_yaml.write_text(yaml.safe_dump(cfg, sort_keys=False))

    worker = cluster.worker()
    cluster.run(str(BIN / "serve"), "deploy", str(serve_yaml), "-a", cluster.dashboard)
    url = f"http://127.0.0.1:{http_port}"
    client = httpx.Client(timeout=EXPERT_TIMEOUT_S * 3, trust_env=False)
    up = _wait(lambda: _ask(client, url) == (200, "pinned"), 150, "pinned expert answering")
    print(f"\ncluster up and the pinned expert answering in {time.monotonic() - t_start:.1f}s")
    assert up >= 0

    cluster.kill(worker)  # its raylet and the replica on it die with the session
    killed = time.monotonic()
    during: list[tuple[int, str]] = []
    while time.monotonic() - killed < 60 and (len(during) < 12 or during[-1][1] != "fallback"):
        during.append(_ask(client, url))
    codes = [s for s, _ in during]
    # No 5xx beyond the requests in flight when the node died (sequential: at most one).
    assert sum(1 for s in codes if s >= 500 or s < 0) <= 1, during
    assert any(e == "fallback" for s, e in during if s == 200), during
    print(
        f"node killed: {len(during)} requests in {time.monotonic() - killed:.1f}s, "
        f"statuses {sorted(set(codes))}, answered by {sorted({e for _, e in during})}"
    )

    cluster.worker()
    back = time.monotonic()
    _wait(lambda: _ask(client, url) == (200, "pinned"), 120, "replica rescheduled")
    print(
        f"recovered: pinned expert again {time.monotonic() - back:.1f}s after the worker "
        f"restarted ({time.monotonic() - killed:.1f}s after the kill); "
        f"test total {time.monotonic() - t_start:.1f}s"
    )
    assert time.monotonic() - t_start < DEADLINE_S
