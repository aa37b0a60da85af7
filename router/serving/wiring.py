"""Building the Gateway from a config: in-process parts for cheap things, handles for the rest."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from router.config import AppConfig
from router.continuous.live import Continuous
from router.serving.accounting import Accounting, spool_path
from router.serving.callers import (
    HandleClassifier,
    HandleExpert,
    InProcessClassifier,
    InProcessExpert,
)
from router.serving.gateway import Gateway
from router.serving.service import ClassifierCaller, RouterService

log = logging.getLogger("slm_router")


def build_classifier_caller(config: AppConfig, handle: Any | None) -> ClassifierCaller:
    if handle is not None:
        return HandleClassifier(handle)
    from classifiers import build_classifier

    clf = build_classifier(config.classifier, config.route_examples(), Path.cwd())
    return InProcessClassifier(clf)


def build_accounting(config: AppConfig, redis_url: str | None) -> Accounting:
    """Telemetry always; ledger, keys and budgets when there is a Redis to keep them in."""
    from router.serving.telemetry import Telemetry

    telemetry = Telemetry(capture_prompts=config.gateway.log_prompts)
    if not redis_url:
        if config.gateway.auth:
            log.warning("gateway.auth is on but no REDIS_URL: every /v1 call will get 503")
        return Accounting(config, telemetry=telemetry)
    from router.finance.budgets import Limiter
    from router.finance.keys import KeyStore
    from router.finance.ledger import Ledger
    from router.finance.redis_server import make_client

    client = make_client(redis_url)
    spool = spool_path(redis_url=redis_url)
    ledger = Ledger(redis_url, spool, client=client, on_spool=telemetry.observe_spooled)
    return Accounting(
        config,
        telemetry=telemetry,
        ledger=ledger,
        keys=KeyStore(client),
        limiter=Limiter(client),
    )


def build_gateway(
    config: AppConfig,
    classifier_handle: Any | None,
    expert_handles: dict[str, Any],
    redis_url: str | None = None,
) -> Gateway:
    from experts.registry import build_backend

    experts: dict[str, Any] = {}
    for name, spec in config.experts.items():
        adapter = name if spec.adapter else None  # shared-base LoRA: adapters are named by expert
        if name in expert_handles:
            experts[name] = HandleExpert(expert_handles[name], adapter)
        else:
            experts[name] = InProcessExpert(build_backend(name, spec), adapter)
    classifier = build_classifier_caller(config, classifier_handle)
    acct = build_accounting(config, redis_url)
    continuous = build_continuous(config, classifier, acct)
    service = RouterService(config, classifier, experts, continuous=continuous)
    return Gateway(service, experts, acct)


def build_continuous(
    config: AppConfig, classifier: ClassifierCaller, acct: Accounting
) -> Continuous:
    """Drift windows, the candidate classifier (shadow/canary) and the feedback store."""
    from router.continuous.live import Continuous, build_candidate, build_feedback_store

    ledger = acct.ledger
    feedback = build_feedback_store(config, ledger.redis, ledger, ledger.prefix) if ledger else None
    cont = Continuous(config, classifier, build_candidate(config), feedback)
    if acct.telemetry is not None:
        cont.register_gauges(acct.telemetry.metrics.provider.get_meter("slm_router"))
    return cont
