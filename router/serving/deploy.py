"""Deploying the app through Serve's declarative config: the path `serve deploy` takes.

`serve.run` (the imperative API) gives every deployment a random code version on each call, so
redeploying restarts every replica; the way to update a running app in place without private
flags is the declarative config. Serve keeps a deployment's replicas when the app's code version
(import path, args, runtime_env) is unchanged: a changed `user_config` then reaches the live
replicas' `reconfigure()`, and scaling options are applied in place. The config sent here is the
one `slm-router serve-config` prints, so `serve deploy` of that file does the same.

A declarative deploy replaces the whole set of declaratively deployed apps, so the apps already
running that way (another copy on the same Serve, a test's) are sent along unchanged.
"""

from __future__ import annotations

import time
from typing import Any

_POLL_S = 0.1


def deploy(app: dict[str, Any], timeout_s: float = 600.0) -> float:
    """Apply one application's config (app.app_config's shape) and wait until it runs with it;
    returns the seconds taken. Raises RuntimeError when Serve reports the deploy failed."""
    from ray.serve._private.api import serve_start  # the client `serve run config.yaml` uses
    from ray.serve.schema import ServeDeploySchema

    t0 = time.time()
    client = serve_start()
    running = client.get_serve_details().get("applications", {})
    current = running.get(app["name"]) or {}
    app = _keep_running_env(app, current.get("deployed_app_config") or {})
    others = [
        details["deployed_app_config"]
        for name, details in running.items()
        if name != app["name"]
        and details.get("source") == "declarative"
        and details.get("deployed_app_config")
    ]
    config = ServeDeploySchema.model_validate({"applications": [*others, app]})
    client.deploy_apps(config)
    _wait_running(app["name"], t0, timeout_s)
    return time.time() - t0


def _keep_running_env(app: dict[str, Any], running: dict[str, Any]) -> dict[str, Any]:
    """The running app's runtime_env and redis_url, when it has them: `policy apply` runs in
    another process whose environment may differ, and either would change the code version
    (a restart of every replica) for no reason."""
    out = dict(app)
    if "runtime_env" in running:
        out["runtime_env"] = running["runtime_env"]
    url = (running.get("args") or {}).get("redis_url")
    if url and "redis_url" not in out.get("args", {}):
        out["args"] = {**out.get("args", {}), "redis_url": url}
    return out


def _wait_running(name: str, since: float, timeout_s: float) -> None:
    """Until the app's status is RUNNING for a deploy made at or after `since`."""
    from ray import serve
    from ray.serve.schema import ApplicationStatus

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications.get(name)
        if status is not None and status.last_deployed_time_s >= since - 1.0:
            if status.status == ApplicationStatus.RUNNING:
                return
            if status.status == ApplicationStatus.DEPLOY_FAILED:
                raise RuntimeError(f"Serve could not deploy {name}: {status.message}")
        time.sleep(_POLL_S)
    raise TimeoutError(f"{name} not running {timeout_s:.0f}s after the deploy")
