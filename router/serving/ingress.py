"""The Serve ingress deployment: builds the replica's parts from handles, serves the FastAPI app.

The policy arrives in Serve's `user_config`: Serve calls `reconfigure()` once after `__init__`
and again on the live replicas whenever a deploy changes only the user_config (a `policy apply`
that keeps the same expert deployments), so a new policy never waits for a new replica. Each
reconfigure builds the new policy's parts and app beside the old ones and swaps them in with one
assignment: a request already in flight finishes on the objects it started with.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ray import serve
from starlette.types import Receive, Scope, Send

from router.config import AppConfig
from router.serving.http.state import AppState
from router.serving.wiring import build_state

log = logging.getLogger("slm_router")


class CurrentApp:
    """An ASGI app that forwards to whichever FastAPI app holds the current policy."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self.app
        if app is None:
            if scope["type"] == "lifespan":  # Serve runs the lifespan before the first policy
                await _lifespan_without_events(receive, send)
                return
            raise RuntimeError("the ingress has no policy yet (user_config missing)")
        await app(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        # Serve reads `routes` / `router` of the ASGI app to name routes in its metrics.
        if name.startswith("__") or self.app is None:
            raise AttributeError(name)
        return getattr(self.app, name)


async def _lifespan_without_events(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


@serve.deployment
@serve.ingress()
class Ingress:
    def __init__(
        self,
        classifier_handle: Any | None,
        expert_handles: dict[str, Any],
        redis_url: str | None = None,
    ) -> None:
        self.classifier_handle = classifier_handle
        self.expert_handles = expert_handles
        self.redis_url = redis_url or os.environ.get("REDIS_URL") or None
        self.state: AppState | None = None
        self.asgi = CurrentApp()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve's user_config hook: apply {"policy": <AppConfig as JSON>} in place."""
        config = AppConfig.model_validate(user_config["policy"])
        missing = [
            name
            for name, spec in config.experts.items()
            if spec.runs_in_own_deployment and name not in self.expert_handles
        ]
        if missing:  # the graph is in the app's args: a new expert needs a new deploy
            raise ValueError(f"no deployment for local expert(s) {missing}: redeploy the app")
        from router.serving.http.api import create_api

        old = self.state
        state = build_state(
            config,
            self.classifier_handle,
            self.expert_handles,
            self.redis_url,
            telemetry=old.telemetry if old is not None else None,
            current=self._continuous,
        )
        app = create_api(state, behind_serve=True)  # Serve sets x-request-id
        self.state, self.asgi.app = state, app
        if old is not None:
            log.info("policy %s applied in place", config.name)

    def _continuous(self) -> Any:
        return self.state.continuous if self.state is not None else None

    def __serve_build_asgi_app__(self) -> Any:
        return self.asgi
