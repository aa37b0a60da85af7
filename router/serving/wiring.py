"""Building one ingress replica's parts from a config: in-process parts for cheap things, Serve
handles for the rest, and the AppState the HTTP routes are given."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.config import AppConfig
from router.continuous.arms import ClassifierCaller
from router.continuous.feedback import FeedbackStore
from router.continuous.live import Continuous
from router.finance.access import Access
from router.serving.accounting import Accounting
from router.serving.callers import (
    HandleClassifier,
    HandleExpert,
    InProcessClassifier,
    InProcessExpert,
)
from router.serving.gateway import Gateway
from router.serving.http.state import AppState
from router.serving.replica_metrics import label_replica, share_with_peers
from router.serving.service import RouterService
from router.serving.telemetry import Telemetry

log = logging.getLogger("slm_router")


def build_classifier_caller(config: AppConfig, handle: Any | None) -> ClassifierCaller:
    if handle is not None:
        return HandleClassifier(handle)
    from classifiers import build_classifier

    clf = build_classifier(config.classifier, config.route_examples(), Path.cwd())
    return InProcessClassifier(clf)


def build_candidate(config: AppConfig, base: Path | None = None) -> ClassifierCaller | None:
    """The rollout's candidate in-process (in a worker thread, like the default live one)."""
    rollout = config.classifier_rollout
    if rollout is None:
        return None
    from classifiers import build_classifier

    clf = build_classifier(rollout.candidate, config.route_examples(), base or Path.cwd())
    return InProcessClassifier(clf)


@dataclass(frozen=True)
class Books:
    """What a Redis holds for the gateway: keys, budgets, the ledger and feedback."""

    access: Access
    accounting: Accounting
    feedback: FeedbackStore | None = None


def build_books(config: AppConfig, telemetry: Telemetry, redis_url: str | None) -> Books:
    """Telemetry always; ledger, keys, budgets and feedback when there is a Redis for them."""
    if not redis_url:
        if config.gateway.auth:
            log.warning("gateway.auth is on but no REDIS_URL: every /v1 call will get 503")
        access = Access(config.gateway.auth)
        return Books(access, Accounting(config, access=access, telemetry=telemetry))
    from router.finance.budgets import Limiter
    from router.finance.keys import KeyStore
    from router.finance.ledger import Ledger
    from router.finance.redis_server import make_client
    from router.finance.spool import spool_path

    client = make_client(redis_url)
    spool = spool_path(redis_url=redis_url)
    ledger = Ledger(redis_url, spool, client=client, on_spool=telemetry.observe_spooled)
    access = Access(config.gateway.auth, KeyStore(client))
    accounting = Accounting(
        config, access=access, telemetry=telemetry, ledger=ledger, limiter=Limiter(client)
    )
    feedback = FeedbackStore(client, ledger.get, prefix=ledger.prefix, policy=config.feedback)
    return Books(access, accounting, feedback)


def build_state(
    config: AppConfig,
    classifier_handle: Any | None,
    expert_handles: dict[str, Any],
    redis_url: str | None = None,
    *,
    telemetry: Telemetry | None = None,
    current: Callable[[], Continuous] | None = None,
) -> AppState:
    """`telemetry`: the one this replica already has (a policy reconfigured in place keeps its
    metrics, peers and gauges); `current` returns the live Continuous for those gauges."""
    from experts.registry import build_backend

    experts: dict[str, Any] = {}
    for name, spec in config.experts.items():
        adapter = name if spec.adapter else None  # shared-base LoRA: adapters are named by expert
        if name in expert_handles:
            experts[name] = HandleExpert(expert_handles[name], adapter)
        else:
            experts[name] = InProcessExpert(build_backend(name, spec), adapter)
    classifier = build_classifier_caller(config, classifier_handle)
    fresh = telemetry is None
    if telemetry is None:
        telemetry = Telemetry(capture_prompts=config.gateway.log_prompts)
        # Several ingress replicas: distinct series per replica, and each scrape shows them all.
        if not share_with_peers(telemetry.metrics, redis_url):
            label_replica(telemetry.metrics)
    telemetry.capture_prompts = config.gateway.log_prompts
    books = build_books(config, telemetry, redis_url)
    continuous = Continuous(config, classifier, build_candidate(config), books.feedback)
    if fresh:  # once per replica: a reused telemetry already reads the live one via `current`
        meter = telemetry.metrics.provider.get_meter("slm_router")
        continuous.register_gauges(meter, current)
    service = RouterService(config, classifier, experts, continuous=continuous)
    spend = None
    if books.accounting.ledger is not None:
        from router.finance.spend_api import SpendReader

        spend = SpendReader(books.accounting.ledger, books.access.keys, books.accounting.limiter)
    return AppState(
        gateway=Gateway(service, experts, books.accounting),
        access=books.access,
        telemetry=telemetry,
        spend=spend,
        feedback=books.feedback,
        continuous=continuous,
    )
