"""Redis down and back (issue 14.5), on the real app with a Redis of the test's own: with auth on
the gateway fails closed (503 in OpenAI's envelope) and recovers by itself when Redis returns;
with auth off answers go on and the ledger spools."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from router.config import parse_policy
from router.finance.keys import KeyStore
from router.finance.redis_server import EmbeddedRedis, make_client
from router.serving.wiring import build_state

POLICY = """
version: 1
classifier: {{kind: examples, oos_threshold: 0.3}}
experts:
  cheap: {{backend: fake}}
routing:
  fallback: cheap
  routes:
    - domain: code
      experts: [cheap]
      examples: [write a python function, fix this javascript bug]
gateway: {{auth: {auth}}}
"""
BODY = {"model": "auto", "messages": [{"role": "user", "content": "write a python function"}]}


def _client(redis: EmbeddedRedis, auth: bool) -> tuple[httpx.AsyncClient, object]:
    from router.serving.http.api import create_api

    state = build_state(parse_policy(POLICY.format(auth=str(auth).lower())), None, {}, redis.url)
    transport = httpx.ASGITransport(app=create_api(state))
    return httpx.AsyncClient(transport=transport, base_url="http://gw"), state


async def _until_ok(client: httpx.AsyncClient, headers: dict[str, str], within_s: float) -> int:
    deadline = time.monotonic() + within_s
    status = 0
    while time.monotonic() < deadline:
        status = (await client.post("/v1/chat/completions", json=BODY, headers=headers)).status_code
        if status == 200:
            return status
        await asyncio.sleep(0.2)
    return status


async def test_auth_on_fails_closed_then_recovers(
    private_redis: EmbeddedRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLM_ROUTER_SPOOL_DIR", str(tmp_path))
    created = await KeyStore(make_client(private_redis.url)).create_key("alpha")
    auth = {"authorization": f"Bearer {created.plaintext}"}
    client, _ = _client(private_redis, auth=True)
    async with client:
        assert (
            await client.post("/v1/chat/completions", json=BODY, headers=auth)
        ).status_code == 200
        private_redis.stop()
        for headers in (auth, {"authorization": "Bearer sk-not-cached"}):
            r = await client.post("/v1/chat/completions", json=BODY, headers=headers)
            assert r.status_code == 503, r.text
            err = r.json()["error"]
            assert err["type"] == "service_unavailable"
            assert err["code"] == "auth_backend_unavailable"
        private_redis.start()
        assert await _until_ok(client, auth, within_s=10) == 200


async def test_auth_off_answers_go_on_and_the_ledger_spools(
    private_redis: EmbeddedRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLM_ROUTER_SPOOL_DIR", str(tmp_path))
    client, state = _client(private_redis, auth=False)
    async with client:
        assert (await client.post("/v1/chat/completions", json=BODY)).status_code == 200
        private_redis.stop()
        for _ in range(3):
            assert (await client.post("/v1/chat/completions", json=BODY)).status_code == 200
        ledger = state.gateway.accounting.ledger  # type: ignore[attr-defined]
        await ledger.drain()
        assert ledger.spool_pending()
        private_redis.start()
