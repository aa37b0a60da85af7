"""Hot reload: apply a new policy to the running application.

The policy is baked into the deployments' init args, so applying it is a Serve redeploy of the
same graph: Serve rolls only the deployments whose args or options changed (always the ingress,
an expert only when its spec changed), starting new replicas before draining old ones. Requests
in flight finish on the old policy; new ones see the new. An invalid file never reaches Serve.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from router.config import AppConfig, load_policy


def apply_config(
    config: AppConfig, redis_url: str | None, *, name: str | None = None, route_prefix: str = "/"
) -> float:
    """Redeploy onto the Serve instance this process is connected to; returns seconds taken.

    `name` / `route_prefix` address another copy of the app on the same Serve (tests)."""
    from ray import serve

    from router.serving.app import APP_NAME, build_app

    t0 = time.monotonic()
    app = build_app(config, redis_url)
    serve.run(app, name=name or APP_NAME, route_prefix=route_prefix, blocking=False)
    return time.monotonic() - t0


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
