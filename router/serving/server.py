"""Running the Serve application: locally for `slm-router serve`, or as a config for clusters."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from router.config import AppConfig
from router.serving.app import APP_NAME, build_app
from router.serving.runtime import start_ray, worker_env

log = logging.getLogger("slm_router")


def _say(msg: str) -> None:
    print(f"slm-router: {msg}", file=sys.stderr, flush=True)


_EMBEDDED: list[Any] = []
_REDIS_URL: list[str | None] = [None]


def start_redis(redis_url: str | None) -> str:
    """REDIS_URL (or the given URL), else the embedded redis-server, stopped with the gateway."""
    from router.finance.redis_server import resolve_redis_url

    url, server = resolve_redis_url(redis_url)
    _REDIS_URL[0] = url
    if server is not None:
        _EMBEDDED.append(server)
        _say(f"redis: embedded redis-server at {url} (data in {server.data_dir})")
    return url


def start_gateway(
    config: AppConfig, host: str = "127.0.0.1", port: int = 8000, redis_url: str | None = None
) -> str:
    """Start (or join) Ray and run the app; returns the base URL once every deployment is up."""
    from ray import serve

    t0 = time.monotonic()
    redis_url = start_redis(redis_url)
    start_ray()
    _say(f"ray up in {time.monotonic() - t0:.1f}s; deploying (first start converts models)...")
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(config, redis_url), name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    _say(f"ready in {time.monotonic() - t0:.1f}s at {url}/v1  (OpenAI-compatible; model='auto')")
    for name, spec in config.experts.items():
        where = "own deployment" if spec.runs_in_own_deployment else "in ingress"
        _say(f"  expert {name:<12} {spec.backend:<6} {spec.model or '-'} ({where})")
    return url


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
    from ray import serve

    try:
        serve.shutdown()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        while _EMBEDDED:
            _EMBEDDED.pop().stop()


def run_gateway(
    config: AppConfig,
    host: str,
    port: int,
    wait: Callable[[Callable[[], None] | None], None],
    watch: Path | None = None,
) -> int:
    try:
        start_gateway(config, host, port)
        _say("Ctrl-C to stop" + (f"; watching {watch} for changes" if watch else ""))
        wait(_watcher(watch) if watch else None)
        _say("shutting down...")
    finally:
        stop_gateway()
    _say("stopped")
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
    """A Ray Serve config file (`serve deploy`) running the same app, the policy embedded."""
    from experts.deployment import deployment_options, lora_groups

    deployments: list[dict[str, Any]] = []
    grouped = {m: first for first, ms in lora_groups(config.experts).items() for m in ms}
    for name, spec in config.experts.items():
        if not spec.runs_in_own_deployment or grouped.get(name, name) != name:
            continue
        opts = deployment_options(name, spec)
        if name in grouped:
            opts["name"] = f"lora-{name}"
        deployments.append(opts)
    deployments.append(
        {
            "name": "ingress",
            "num_replicas": config.gateway.replicas,
            "max_ongoing_requests": config.gateway.max_ongoing_requests,
        }
    )
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": "router.serving.app:app_builder",
                "args": {"policy_json": json.dumps(config.model_dump(mode="json"))},
                "runtime_env": {"env_vars": worker_env()},
                "deployments": deployments,
            }
        ],
    }


def serve_config_yaml(config: AppConfig, host: str = "0.0.0.0", port: int = 8000) -> str:
    return yaml.safe_dump(serve_config(config, host, port), sort_keys=False)
