"""Start and stop the processes the overhead benchmark measures, each on 127.0.0.1.

Every process is started in its own session so that stopping it (by its process-group id)
also ends the workers it forked, and nothing outlives the benchmark.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

LITELLM_VERSION = "1.106.2"
LITELLM_MASTER_KEY = "sk-overhead-bench"
_OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "RAY_USAGE_STATS_ENABLED": "0",
    "LITELLM_TELEMETRY": "False",
    "NO_PROXY": "*",
}


@dataclass(frozen=True)
class Started:
    """A running target: where to send requests, with which model and key, and how to stop it."""

    url: str
    model: str
    api_key: str | None
    stop: Callable[[], None]
    start_s: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cache_dir() -> Path:
    root = os.environ.get("SLM_ROUTER_CACHE") or os.environ.get("XDG_CACHE_HOME")
    base = Path(root) if root else Path.home() / ".cache"
    return base if os.environ.get("SLM_ROUTER_CACHE") else base / "slm-router"


def _env() -> dict[str, str]:
    return {**os.environ, **_OFFLINE_ENV}


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env=env or _env(), start_new_session=True
        )


def _stopper(
    proc: subprocess.Popen[bytes], first: int = signal.SIGTERM, grace_s: float = 20.0
) -> Callable[[], None]:
    def stop() -> None:
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, first)
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass

    return stop


def wait_ready(
    url: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    timeout_s: float,
    headers: dict[str, str] | None = None,
) -> None:
    """Poll GET url until 200; raise with the log's tail if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0, trust_env=False, headers=headers) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"exited with {proc.returncode}: {_tail(log)}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
    raise RuntimeError(f"not ready after {timeout_s:.0f} s: {_tail(log)}")


def _tail(log: Path, n: int = 1500) -> str:
    try:
        return log.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _workdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"overhead-{name}-"))


def start_backend() -> Started:
    """The instant backend (loadtest.backend) in its own process, so it has its own GIL."""
    t0 = time.perf_counter()
    port, log = free_port(), _workdir("backend") / "backend.log"
    proc = _spawn([sys.executable, "-m", "loadtest.backend", "--port", str(port)], log)
    url = f"http://127.0.0.1:{port}"
    stop = _stopper(proc)
    try:
        wait_ready(url + "/health", proc, log, 30)
    except RuntimeError:
        stop()
        raise
    return Started(url, "instant", None, stop, time.perf_counter() - t0)


# --- LiteLLM proxy: the peer, in its own virtualenv so it never touches the project's .venv --


def ensure_litellm_venv(root: Path | None = None) -> Path:
    """Create (once) a venv holding litellm[proxy]==LITELLM_VERSION; return its `litellm` path."""
    venv = (root or cache_dir()) / f"litellm-proxy-{LITELLM_VERSION}"
    exe = venv / "bin" / "litellm"
    if exe.exists():
        return exe
    t0 = time.perf_counter()
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} ...", file=sys.stderr)
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
        check=True,
    )
    print(f"installed in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return exe


def litellm_config(backend_url: str) -> str:
    return (
        "model_list:\n"
        "  - model_name: instant\n"
        "    litellm_params:\n"
        "      model: openai/instant\n"
        f"      api_base: {backend_url}/v1\n"
        "      api_key: sk-none\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_MASTER_KEY}\n"
    )


def start_litellm_proxy(backend_url: str) -> Started:
    """`litellm --config cfg.yaml --port P --num_workers 1` with a master key and no database."""
    exe = ensure_litellm_venv()
    t0 = time.perf_counter()
    work, port = _workdir("litellm"), free_port()
    cfg = work / "cfg.yaml"
    cfg.write_text(litellm_config(backend_url), encoding="utf-8")
    cmd = [
        str(exe),
        "--config",
        str(cfg),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    env = {k: v for k, v in _env().items() if k != "DATABASE_URL"}
    proc = _spawn(cmd, work / "litellm.log", env)
    url = f"http://127.0.0.1:{port}"
    stop = _stopper(proc)
    try:
        wait_ready(url + "/health/liveliness", proc, work / "litellm.log", 180)
    except RuntimeError:
        stop()
        raise
    return Started(url, "instant", LITELLM_MASTER_KEY, stop, time.perf_counter() - t0)


# --- slm-router ------------------------------------------------------------------------------
# `start_slm_router(backend_url) -> Started` runs `slm-router serve --policy <yaml> --host
# 127.0.0.1 --port P` as a subprocess, with the policy below (every route on the backend);
# --slm-router-policy FILE (a template with {backend_url}) or --slm-router-url URL (an already
# running gateway) replace it.

SLM_BACKEND_KEY_ENV = "OVERHEAD_BACKEND_KEY"


_ROUTE_EXAMPLES = {
    "code": ("write a python function that reverses a string", "what does git rebase do"),
    "math": ("solve for x in 3x + 5 = 20", "what is the derivative of x squared"),
    "general": ("write a short poem about the sea", "what is the capital of France"),
}


def slm_router_policy_yaml(backend_url: str) -> str:
    """One `remote` expert at the instant backend behind every route, classifier included.

    The classifier stays on (the shipped default kind) so that the measured overhead is
    what a user pays: classification, policy decision, the remote call and the accounting.
    """
    routes = "".join(
        f"    - domain: {domain}\n      experts: [instant]\n      examples:\n"
        + "".join(f"        - {text}\n" for text in texts)
        for domain, texts in _ROUTE_EXAMPLES.items()
    )
    return (
        "version: 1\n"
        "experts:\n"
        "  instant:\n"
        "    backend: remote\n"
        "    model: openai/instant\n"
        f"    api_base: {backend_url}/v1\n"
        f"    api_key_env: {SLM_BACKEND_KEY_ENV}\n"
        "    timeout_s: 10\n"
        "routing:\n"
        "  fallback: instant\n"
        "  routes:\n" + routes
    )


def _slm_router_exe() -> list[str]:
    exe = Path(sys.executable).parent / "slm-router"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "router.ops.cli"]


def start_slm_router(
    backend_url: str, url: str | None = None, policy_template: Path | None = None
) -> Started:
    """slm-router in front of the backend as a `remote` expert (or an already running one)."""
    if url:
        return Started(
            url.rstrip("/"), "auto", os.environ.get("SLM_ROUTER_API_KEY"), lambda: None, 0.0
        )
    t0 = time.perf_counter()
    work, port = _workdir("slm-router"), free_port()
    policy = work / "policy.yaml"
    text = (
        policy_template.read_text(encoding="utf-8").replace("{backend_url}", backend_url)
        if policy_template
        else slm_router_policy_yaml(backend_url)
    )
    policy.write_text(text, encoding="utf-8")
    log = work / "slm-router.log"
    cmd = [
        *_slm_router_exe(),
        "serve",
        "--policy",
        str(policy),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = _spawn(cmd, log, {**_env(), SLM_BACKEND_KEY_ENV: "sk-none"})
    base = f"http://127.0.0.1:{port}"
    # SIGINT: the gateway shuts Ray down cleanly on Ctrl-C; Ray needs longer than a web server.
    stop = _stopper(proc, signal.SIGINT, grace_s=60.0)
    try:
        wait_ready(base + "/readyz", proc, log, 300)
    except RuntimeError:
        stop()
        raise
    return Started(
        base, "auto", os.environ.get("SLM_ROUTER_API_KEY"), stop, time.perf_counter() - t0
    )
