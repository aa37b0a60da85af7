"""Hot reload: apply a new policy to the running application.

A Serve declarative deploy of the app's config (router/serving/deploy.py): the policy is the
ingress's user_config, so a policy that keeps the same local experts reaches the live ingress
replicas' `reconfigure()` with no new replica; a changed local expert (the graph, in the app's
args) makes Serve roll the app, new replicas before old ones go. Requests in flight finish on the
old policy; new ones see the new. An invalid file never reaches Serve.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from router.config import AppConfig, load_policy


def apply_config(
    config: AppConfig, redis_url: str | None, *, name: str | None = None, route_prefix: str = "/"
) -> float:
    """Deploy onto the Serve instance this process is connected to; returns seconds taken once
    the app runs the new policy. `name` / `route_prefix` address another copy of the app on the
    same Serve (tests)."""
    from router.serving.app import APP_NAME, app_config
    from router.serving.deploy import deploy
    from router.serving.runtime import worker_env

    app = app_config(
        config,
        name=name or APP_NAME,
        route_prefix=route_prefix,
        redis_url=redis_url,
        env_vars=worker_env(),
    )
    return deploy(app)


def apply_file(path: str | os.PathLike[str], address: str | None = None) -> tuple[AppConfig, float]:
    """Validate `path` (raises PolicyLoadError, nothing applied), join Ray, redeploy."""
    config = load_policy(path)
    from router.finance.redis_server import resolve_redis_url
    from router.serving.runtime import apply_airgap_env

    apply_airgap_env()
    # The running gateway's Redis: REDIS_URL, or the embedded server found by its data dir.
    redis_url, _ = resolve_redis_url()
    import ray

    if not ray.is_initialized():
        target = address or os.environ.get("RAY_ADDRESS") or "auto"
        ray.init(address=target, logging_level=logging.WARNING)
    return config, apply_config(config, redis_url)


class PolicyWatcher:
    """Polls a policy file's mtime; `slm-router serve --watch` applies changes as they land."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = self._stat()

    def _stat(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    def changed(self) -> bool:
        mtime = self._stat()
        if mtime != self._mtime:
            self._mtime = mtime
            return True
        return False
