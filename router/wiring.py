"""Building the Gateway from a config: in-process parts for cheap things, handles for the rest."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from router.callers import (
    HandleClassifier,
    HandleExpert,
    InProcessClassifier,
    InProcessExpert,
)
from router.config import AppConfig
from router.gateway import Gateway
from router.service import ClassifierCaller, RouterService

log = logging.getLogger("slm_router")


def build_classifier_caller(config: AppConfig, handle: Any | None) -> ClassifierCaller:
    if handle is not None:
        return HandleClassifier(handle)
    from classifiers import build_classifier

    clf = build_classifier(config.classifier, config.route_examples(), Path.cwd())
    return InProcessClassifier(clf)


def build_gateway(
    config: AppConfig, classifier_handle: Any | None, expert_handles: dict[str, Any]
) -> Gateway:
    from experts.registry import build_backend

    experts: dict[str, Any] = {}
    for name, spec in config.experts.items():
        if name in expert_handles:
            experts[name] = HandleExpert(expert_handles[name])
        else:
            experts[name] = InProcessExpert(build_backend(name, spec))
    classifier = build_classifier_caller(config, classifier_handle)
    service = RouterService(config, classifier, experts)
    return Gateway(service, experts)
