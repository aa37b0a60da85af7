"""The Serve ingress deployment: builds the Gateway from handles and serves the FastAPI app."""

from __future__ import annotations

from typing import Any

from ray import serve

from router.config import AppConfig
from router.wiring import build_gateway


@serve.deployment
@serve.ingress()
class Ingress:
    def __init__(
        self,
        config: AppConfig,
        classifier_handle: Any | None,
        expert_handles: dict[str, Any],
    ) -> None:
        self.gateway = build_gateway(config, classifier_handle, expert_handles)

    def __serve_build_asgi_app__(self) -> Any:
        from router.http import create_api

        return create_api(self.gateway)
