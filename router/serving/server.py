"""Running the Serve application: locally for `slm-router serve`, or as a config for clusters."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from router.config import AppConfig
from router.serving.app import app_config
from router.serving.reload import apply_config
from router.serving.runtime import start_ray, worker_env

log = logging.getLogger("slm_router")


def _say(msg: str) -> None:
    print(f"slm-router: {msg}", file=sys.stderr, flush=True)


_EMBEDDED: list[Any] = []
_REDIS_URL: list[str | None] = [None]
_DATAPLANE_DIRS: list[Path] = []
_RECORD: list[Any] = []  # this gateway's GatewayInfo (router/serving/gateway_file.py)
_DEAD_RAY: list[bool] = []  # a group SIGTERM took Ray's processes with ours


def start_redis(redis_url: str | None) -> str:
    """REDIS_URL (or the given URL), else the embedded redis-server, stopped with the gateway."""
    from router.finance.redis_server import resolve_redis_url

    url, server = resolve_redis_url(redis_url)
    _REDIS_URL[0] = url
    if server is not None:
        _EMBEDDED.append(server)
        _say(f"redis: embedded redis-server at {url} (data in {server.data_dir})")
    return url


def _reap_dead_run() -> None:
    """A gateway of this name killed with -9 left its Redis and Ray session: stop them first."""
    from router.serving import gateway_file

    if left := gateway_file.reap_dead():
        _say(f"stopped {len(left)} process(es) a dead gateway left (pids {', '.join(left)})")


def start_gateway(
    config: AppConfig, host: str = "127.0.0.1", port: int = 8000, redis_url: str | None = None
) -> str:
    """Start (or join) Ray and run the app; returns the base URL once every deployment is up."""
    from ray import serve

    from router.serving import dataplane, signals

    t0 = time.monotonic()
    _reap_dead_run()
    _plane, run_dir, line = dataplane.prepare()  # before Ray starts: Serve reads it then
    if run_dir is not None:
        _DATAPLANE_DIRS.append(run_dir)
    _say(line)
    redis_url = start_redis(redis_url)
    start_ray()
    signals.reinstall()  # ray.init replaced our SIGTERM handler (issue 14.1)
    _say(f"ray up in {time.monotonic() - t0:.1f}s; deploying (first start converts models)...")
    serve.start(http_options={"host": host, "port": port})
    # Declarative, like `serve deploy`: a later `policy apply` then reconfigures in place.
    apply_config(config, redis_url)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    _say(f"ready in {time.monotonic() - t0:.1f}s at {url}/v1  (OpenAI-compatible; model='auto')")
    for name, spec in config.experts.items():
        where = "own deployment" if spec.runs_in_own_deployment else "in ingress"
        _say(f"  expert {name:<12} {spec.backend:<6} {spec.model or '-'} ({where})")
    _record(url)
    return url


def _record(url: str) -> None:
    """The runtime file ops commands in another shell find this gateway by (issue 20)."""
    from router.serving import gateway_file

    redis_pid = getattr(getattr(_EMBEDDED[0], "_proc", None), "pid", None) if _EMBEDDED else None
    plane_dir = _DATAPLANE_DIRS[0] if _DATAPLANE_DIRS else None
    path, info = gateway_file.record(url, redis_pid, plane_dir)
    _RECORD.append(info)
    _say(f"ray at {info.ray_address}, serve at {url}; recorded in {path}")


def wait_ready(url: str, timeout_s: float = 120, poll_s: float = 0.5) -> None:
    """Block until `url`/readyz answers 200 (every expert healthy), or raise TimeoutError."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            # trust_env=False: a proxy from the environment must never see loopback traffic.
            if httpx.get(f"{url}/readyz", timeout=5, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll_s)
    raise TimeoutError(f"{url}/readyz never became ready")


def stop_gateway() -> None:
    import ray

    from router.serving.dataplane import drain
    from router.serving.signals import kill_ray_processes, stop_serve

    dead = False
    try:
        # Serve drains in-flight requests (replicas' graceful shutdown), bounded by the grace
        # period, and given up once a group SIGTERM takes Ray's own processes (issue 14.1).
        dead = stop_serve(_stop_serve, _grace_s(), _say)
    finally:
        session_dir = _RECORD[0].session_dir if _RECORD else None
        if dead:  # ray.shutdown would wait on the dead GCS; the caller exits without atexit
            for run_dir in _DATAPLANE_DIRS:  # HAProxy lets in-flight answers finish first
                drain(run_dir, _grace_s())
            kill_ray_processes()
            _DEAD_RAY.append(True)
        elif ray.is_initialized():
            ray.shutdown()
        _forget(session_dir)
        while _EMBEDDED:
            _EMBEDDED.pop().stop()
        from router.serving.dataplane import cleanup

        while _DATAPLANE_DIRS:
            cleanup(_DATAPLANE_DIRS.pop())


def _stop_serve() -> None:
    """On a cluster we joined (RAY_ADDRESS), Serve may run others' apps too: delete ours, and
    shut Serve down only when no app is left (else its controller and proxies outlive us)."""
    import ray
    from ray import serve

    from router.serving.app import APP_NAME
    from router.serving.gateway_file import ray_session

    # No session folder of ours: we did not start this Ray (a stop before Ray was up skips it).
    if ray.is_initialized() and ray_session()[1] is None:
        if APP_NAME in serve.status().applications:
            serve.delete(APP_NAME)
        if serve.status().applications:
            return
    serve.shutdown()


def _forget(session_dir: str | None) -> None:
    """Our runtime file, and the Ray session folder we started (Ray keeps every one)."""
    from router.serving import gateway_file

    while _RECORD:
        gateway_file.remove(_RECORD.pop().name, os.getpid())
    gateway_file.remove_session_dir(session_dir)


def _grace_s() -> float:
    """Seconds serve.shutdown may take to let in-flight requests end (SLM_ROUTER_STOP_GRACE_S)."""
    return float(os.environ.get("SLM_ROUTER_STOP_GRACE_S", "10"))


def run_gateway(
    config: AppConfig,
    host: str,
    port: int,
    wait: Callable[[Callable[[], None] | None], None] | None = None,
    watch: Path | None = None,
) -> int:
    """Run until SIGINT/SIGTERM (router/serving/signals.py); `wait` overrides that wait (tests)."""
    from router.serving.signals import Signals, Stop, stop_embedded

    signals = Signals(lambda: stop_embedded(_EMBEDDED))
    signals.install()
    try:
        try:
            start_gateway(config, host, port)
            signals.install()
            signals.starting = False
            watching = f"; watching {watch} for changes" if watch else ""
            _say("Ctrl-C (or SIGTERM) to stop" + watching)
            (wait or signals.wait)(_watcher(watch) if watch else None)
        except Stop:
            pass
        _say("shutting down...")
    finally:
        signals.starting = False  # a second signal during the stop forces, never unwinds it
        stop_gateway()
    _say("stopped")
    if _DEAD_RAY:  # Ray's atexit hooks would wait on (then fail for) the GCS that is gone
        sys.stdout.flush()
        os._exit(0)
    return 0


def _watcher(path: Path) -> Callable[[], None]:
    """Called every half second: apply the policy file when it changes; keep the old one (and
    say why) when the new one is invalid."""
    from router.config import load_policy
    from router.errors import PolicyLoadError
    from router.serving.reload import PolicyWatcher, apply_config

    watcher = PolicyWatcher(path)

    def poll() -> None:
        if not watcher.changed():
            return
        try:
            config = load_policy(path)
        except PolicyLoadError as exc:
            _say("policy change rejected, the running policy stays:\n" + "\n".join(exc.issues))
            return
        _say(f"policy changed: applied in {apply_config(config, _REDIS_URL[0]):.1f}s")

    return poll


def serve_config(config: AppConfig, host: str = "0.0.0.0", port: int = 8000) -> dict[str, Any]:
    """A Ray Serve config file (`serve deploy`) running the same app: the graph in the app's
    args, the policy in the ingress's user_config (router/serving/app.py)."""
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port},
        "applications": [app_config(config, env_vars=worker_env())],
    }


def serve_config_yaml(config: AppConfig, host: str = "0.0.0.0", port: int = 8000) -> str:
    return yaml.safe_dump(serve_config(config, host, port), sort_keys=False)
