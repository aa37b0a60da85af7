"""The gateway's ASGI app in-process against a real Redis, for tests that need no Ray."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from router.config import parse_policy
from router.finance.keys import KeyStore
from router.finance.redis_server import make_client
from router.serving.wiring import build_state


@asynccontextmanager
async def asgi_gateway(
    policy_text: str, redis_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, KeyStore, Any]]:
    """(client, key store, Gateway) on a flushed Redis; the caller sets SLM_ROUTER_SPOOL_DIR."""
    from router.serving.http.api import create_api

    await make_client(redis_url).flushdb()
    state = build_state(parse_policy(policy_text), None, {}, redis_url)
    transport = httpx.ASGITransport(app=create_api(state))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client, KeyStore(make_client(redis_url)), state.gateway
    finally:
        # End the ledger's writer here (written, not spooled), not in the loop's teardown.
        ledger = state.gateway.accounting.ledger
        if ledger is not None:
            await ledger.aclose()
