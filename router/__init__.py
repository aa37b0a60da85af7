"""slm-router: one OpenAI-compatible endpoint in front of a pool of small domain experts.

The public façade; everything else is reached through the sub-packages, which name the concerns:

    router.config       the one policy document (AppConfig) and reading it from a file
    router.errors       the one error tree, rendered in OpenAI's envelope
    router.serving      the request path: HTTP routes -> Gateway -> RouterService -> experts
    router.finance      keys, budgets, costs, the ledger, the spend API and dashboard
    router.continuous   drift, feedback, classifier rollout
    router.ops          the `slm-router` command line

    from router import build_app, load_policy
    app = build_app(load_policy("policies/default.yaml"))   # a Ray Serve application

Names resolve on first use, so importing one sub-module never pulls the whole gateway in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.config import AppConfig, load_policy
    from router.serving.app import build_app

__all__ = ["AppConfig", "build_app", "load_policy"]


def __getattr__(name: str) -> Any:
    if name in ("AppConfig", "load_policy"):
        from router import config

        return getattr(config, name)
    if name == "build_app":
        from router.serving.app import build_app

        return build_app
    raise AttributeError(f"module 'router' has no attribute {name!r}")
