"""What the HTTP routes are given: one AppState per app, built by serving.wiring (or a test).

The serving routes read it with `app_state(request)`; create_api hands the finance and
continuous routers their own parts (the key check, the spend reader, the feedback store, the
status source), so no route reaches through the Gateway into the objects behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from router.continuous.feedback import FeedbackStore
    from router.continuous.live import Continuous
    from router.finance.access import Access
    from router.finance.spend_api import SpendReader
    from router.serving.gateway import Gateway
    from router.serving.telemetry import Telemetry


@dataclass(frozen=True)
class AppState:
    gateway: Gateway
    access: Access
    telemetry: Telemetry | None = None
    spend: SpendReader | None = None  # GET /v1/spend*, /dashboard: with a ledger
    feedback: FeedbackStore | None = None  # POST /v1/feedback: with a ledger
    continuous: Continuous | None = None  # GET /v1/router/status


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.slm_router
    return state
