"""Auth, rate limits, budgets and the spend API on the real gateway app with a real Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.asgi_gateway import asgi_gateway

POLICY = """
version: 1
classifier: {kind: examples, oos_threshold: 0.3}
experts:
  cheap:
    backend: fake
    price: {input_per_1m: 1000, output_per_1m: 2000}
  big:
    backend: fake
    price: {input_per_1m: 10000, output_per_1m: 20000}
routing:
  fallback: cheap
  routes:
    - domain: code
      experts: [cheap]
      examples: [write a python function, fix this javascript bug]
gateway: {auth: true, baseline_expert: big}
"""


@pytest.fixture
async def gw_client(redis_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SLM_ROUTER_SPOOL_DIR", str(tmp_path))
    async with asgi_gateway(POLICY, redis_server.url) as parts:
        yield parts


def body(text: str = "write a python function", **kw):  # type: ignore[no-untyped-def]
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **kw}


async def test_auth_required_and_key_works(gw_client) -> None:  # type: ignore[no-untyped-def]
    client, keys, _ = gw_client
    r = await client.post("/v1/chat/completions", json=body())
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = await client.get("/v1/models")
    assert r.status_code == 401
    created = await keys.create_key("alpha")
    auth = {"authorization": f"Bearer {created.plaintext}"}
    r = await client.post("/v1/chat/completions", json=body(), headers=auth)
    assert r.status_code == 200, r.text
    r = await client.post(
        "/v1/chat/completions", json=body(), headers={"authorization": "Bearer sk-nope"}
    )
    assert r.status_code == 401


async def test_rate_limit_gives_429_with_retry_after(gw_client) -> None:  # type: ignore[no-untyped-def]
    client, keys, _ = gw_client
    created = await keys.create_key("beta", rpm=2)
    auth = {"authorization": f"Bearer {created.plaintext}"}
    codes = [
        (await client.post("/v1/chat/completions", json=body(), headers=auth)) for _ in range(3)
    ]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert int(codes[-1].headers["retry-after"]) >= 1
    assert codes[-1].json()["error"]["type"] == "rate_limit_exceeded" or "rate" in codes[-1].text


async def test_budget_exhaustion_is_429_with_budget_message(gw_client) -> None:  # type: ignore[no-untyped-def]
    client, keys, _ = gw_client
    # One request reserves at most (prompt/4+1) in + 256 out tokens on the dearest expert.
    created = await keys.create_key("gamma", budget_usd="0.02", period="day")
    auth = {"authorization": f"Bearer {created.plaintext}"}
    statuses = []
    for _ in range(8):
        r = await client.post("/v1/chat/completions", json=body(max_tokens=200), headers=auth)
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert "budget" in r.json()["error"]["message"]
            break
    assert 429 in statuses and statuses[0] == 200


async def test_spend_api_matches_served_requests(gw_client) -> None:  # type: ignore[no-untyped-def]
    client, keys, gw = gw_client
    user = await keys.create_key("delta")
    admin = await keys.create_key("ops", admin=True)
    auth = {"authorization": f"Bearer {user.plaintext}"}
    served = []
    for i in range(4):
        r = await client.post(
            "/v1/chat/completions", json=body(f"fix this javascript bug {i}"), headers=auth
        )
        served.append(r.json()["usage"])
    await gw.accounting.ledger.drain()
    r = await client.get("/v1/spend", params={"group_by": "team"}, headers=auth)
    assert r.status_code in (401, 403)  # spend is admin-only
    r = await client.get(
        "/v1/spend",
        params={"group_by": "team"},
        headers={"authorization": f"Bearer {admin.plaintext}"},
    )
    rows = {row["team"]: row for row in r.json()["data"]}
    assert rows["delta"]["requests"] == 4
    tokens_in = sum(u["prompt_tokens"] for u in served)
    tokens_out = sum(u["completion_tokens"] for u in served)
    assert rows["delta"]["input_tokens"] == tokens_in
    # Prices are per 1M tokens: cheap 1000/2000, baseline big 10000/20000, in nano-USD.
    assert rows["delta"]["cost_nano"] == tokens_in * 1000 * 1000 + tokens_out * 2000 * 1000
    assert rows["delta"]["baseline_nano"] == 10 * rows["delta"]["cost_nano"]


async def test_concurrent_requests_are_all_recorded(gw_client) -> None:  # type: ignore[no-untyped-def]
    client, keys, gw = gw_client
    user = await keys.create_key("eps")
    auth = {"authorization": f"Bearer {user.plaintext}"}
    results = await asyncio.gather(
        *(client.post("/v1/chat/completions", json=body(f"q {i}"), headers=auth) for i in range(32))
    )
    assert all(r.status_code == 200 for r in results)
    await gw.accounting.ledger.drain()
    rows = await gw.accounting.ledger.totals(group_by="team")
    assert {r.group[0]: r.requests for r in rows}["eps"] == 32
