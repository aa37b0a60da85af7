"""Issue 19.1/19.2 against a real Redis: admission bounds spend whatever the request's shape, and
every admitted request -- streams the client abandons included -- leaves one ledger record with
the tokens it really produced, settled into the budget and visible on /v1/spend."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from router.finance.keys import KeyStore
from router.serving.openai_types import ChatCompletionRequest
from tests.integration.asgi_gateway import asgi_gateway

# One dear expert: $0.10 per 1k prompt tokens ($100 per 1M): 513 prompt tokens exceed the budget.
POLICY = """
version: 1
classifier: {kind: examples, oos_threshold: 0.3}
experts:
  dear:
    backend: fake
    delay_ms: %(delay)s
    capabilities: {tools: true}  # the burst's tool-call shape must be servable, not a 400
    price: {input_per_1m: 100, output_per_1m: 200}
routing:
  fallback: dear
  routes:
    - domain: code
      experts: [dear]
      examples: [write a python function, fix this javascript bug]
gateway: {auth: true}
"""
BUDGET_NANO = 50_000_000  # $0.05


@pytest.fixture
async def gw(redis_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SLM_ROUTER_SPOOL_DIR", str(tmp_path))
    delay = getattr(request, "param", 0)
    async with asgi_gateway(POLICY % {"delay": delay}, redis_server.url) as parts:
        yield parts


def _shapes() -> list[dict[str, Any]]:
    empty = [{"role": "assistant", "content": ""}] * 511
    tool = {
        "type": "function",
        "function": {"name": "f", "description": "x " * 2000, "parameters": {"type": "object"}},
    }
    user = {"role": "user", "content": "a"}
    return (
        [{"model": "auto", "messages": [*empty, user], "max_tokens": 1}] * 30
        + [{"model": "auto", "messages": [user], "max_tokens": 1_000_000}] * 10
        + [{"model": "auto", "messages": [user], "max_tokens": 1, "tools": [tool]}] * 10
    )


async def _admin_spend(client: httpx.AsyncClient, keys: KeyStore, team: str) -> dict[str, Any]:
    admin = await keys.create_key("ops", admin=True)
    r = await client.get(
        "/v1/spend",
        params={"group_by": "team"},
        headers={"authorization": f"Bearer {admin.plaintext}"},
    )
    assert r.status_code == 200, r.text
    return {row["team"]: row for row in r.json()["data"]}[team]


async def test_adversarial_burst_overshoots_by_at_most_one_request(gw) -> None:  # type: ignore[no-untyped-def]
    client, keys, gateway = gw
    created = await keys.create_key("attacker", budget_usd="0.05", period="day")
    auth = {"authorization": f"Bearer {created.plaintext}"}
    results = await asyncio.gather(
        *(client.post("/v1/chat/completions", json=b, headers=auth) for b in _shapes())
    )
    codes = [r.status_code for r in results]
    assert all(c < 500 for c in codes), [r.text for r in results if r.status_code >= 500]
    assert codes.count(200) >= 1 and codes.count(429) >= 1, {r.text[:200] for r in results}
    acct = gateway.accounting
    await acct.ledger.drain()
    status = await acct.limiter.status("attacker")
    assert status.reserved_nano == 0  # every reservation settled
    rows = {r.group[0]: r for r in await acct.ledger.totals(group_by="team")}
    assert rows["attacker"].requests - rows["attacker"].errors == codes.count(200)
    assert rows["attacker"].cost_nano == status.spent_nano
    # The bound: spend past the budget is less than the dearest single admitted request.
    costs = [r.json()["usage"] for r in results if r.status_code == 200]
    dearest = max(u["prompt_tokens"] * 100_000 + u["completion_tokens"] * 200_000 for u in costs)
    assert status.spent_nano - BUDGET_NANO < dearest, (status, codes.count(200))
    assert (await _admin_spend(client, keys, "attacker"))["cost_nano"] == status.spent_nano


def test_estimate_is_an_upper_bound_and_fits_redis(gw) -> None:  # type: ignore[no-untyped-def]
    _, _, gateway = gw
    from router.serving.accounting import chat_prompt_bound

    for shape in _shapes()[::10]:
        req = ChatCompletionRequest.model_validate(shape)
        bound = chat_prompt_bound(req)
        assert bound >= len(req.messages) + 1  # the fake counts one token per message at least
        nano, tokens = gateway.accounting.estimate(bound, req.max_tokens)
        assert 0 < nano < 2**53 and 0 < tokens < 2**53
    # A window caps max_tokens before estimating; an unset max_tokens uses the expert's default.
    assert gateway.accounting.estimate(0, None) == gateway.accounting.estimate(0, 256)
    assert gateway.accounting.estimate(0, 10**12)[1] <= 1 << 20


async def _cut_stream(gateway: Any, auth: dict[str, str], pieces: int, how: str) -> int:
    """Read `pieces` content events of a stream, then hang up (aclose or cancel); returns the
    content events the client got."""
    req = ChatCompletionRequest.model_validate(
        {"model": "auto", "stream": True, "max_tokens": 40,
         "messages": [{"role": "user", "content": " ".join(f"w{i}" for i in range(60))}]}
    )  # fmt: skip
    result = await gateway.chat(req, auth)
    got = 0

    async def read() -> None:
        nonlocal got
        async for event in result.stream:
            if b'"content":"' in event and b'"content":""' not in event:
                got += 1
                if got >= pieces and how == "aclose":
                    return
                if got >= pieces and how == "cancel":
                    await asyncio.sleep(10)  # cancelled here, mid-stream

    if how == "cancel":
        task = asyncio.ensure_future(read())
        while got < pieces and not task.done():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
    else:
        await read()
    await result.stream.aclose()
    return got


@pytest.mark.parametrize("gw", [20], indirect=True)
async def test_abandoned_streams_are_billed_what_they_produced(gw) -> None:  # type: ignore[no-untyped-def]
    client, keys, gateway = gw
    created = await keys.create_key("streamer", budget_usd="100", period="day")
    auth = {"authorization": f"Bearer {created.plaintext}"}
    cuts = [(1, "aclose"), (5, "aclose"), (39, "aclose"), (1, "cancel"), (12, "cancel")]
    got = [await _cut_stream(gateway, auth, n, how) for n, how in cuts]
    got.append(await _cut_stream(gateway, auth, 10**6, "aclose"))  # read to the end
    acct = gateway.accounting
    for _ in range(100):  # closes of cancelled readers finish in their own tasks
        if not acct._closing:
            break
        await asyncio.sleep(0.02)
    await acct.ledger.drain()
    records = await acct.ledger.top_requests(100, team="streamer")
    assert len(records) == len(cuts) + 1  # exactly one record per request
    assert sorted(r.output_tokens for r in records) == sorted(got)
    assert all(r.cost_nano > 0 and r.input_tokens > 0 for r in records)
    assert sorted(r.status for r in records) == [200] + [499] * len(cuts)
    status = await acct.limiter.status("streamer")
    assert status.reserved_nano == 0
    assert status.spent_nano == sum(r.cost_nano for r in records)
    assert (await _admin_spend(client, keys, "streamer"))["cost_nano"] == status.spent_nano
