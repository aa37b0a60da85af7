"""The Serve ingress deployment: builds the replica's parts from handles, serves the FastAPI app."""

from __future__ import annotations

import os
from typing import Any

from ray import serve

from router.config import AppConfig
from router.serving.wiring import build_state


@serve.deployment
@serve.ingress()
class Ingress:
    def __init__(
        self,
        config: AppConfig,
        classifier_handle: Any | None,
        expert_handles: dict[str, Any],
        redis_url: str | None = None,
    ) -> None:
        url = redis_url or os.environ.get("REDIS_URL") or None
        self.state = build_state(config, classifier_handle, expert_handles, url)

    def __serve_build_asgi_app__(self) -> Any:
        from router.serving.http.api import create_api

        return create_api(self.state, behind_serve=True)  # Serve sets x-request-id
