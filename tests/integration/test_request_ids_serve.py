"""Request ids through Ray Serve's proxy (issue 14.2-14.3): exactly one x-request-id per answer,
the same id in the ledger and the completion's `id`, a client's own id honoured, and feedback
given with either id the client holds."""

from __future__ import annotations

import time
from typing import Any

import httpx


def _ledger(redis_url: str, request_id: str) -> Any:
    import asyncio

    from router.finance.ledger import Ledger

    async def get() -> Any:
        ledger = Ledger(redis_url, "/tmp/unused-spool.jsonl")
        try:
            return await ledger.get(request_id)
        finally:
            await ledger.aclose()

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        record = asyncio.run(get())
        if record is not None:
            return record
        time.sleep(0.2)
    return None


def _chat(url: str, **headers: str) -> httpx.Response:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=120)


def test_one_request_id_shared_by_header_body_and_ledger(
    gateway_url: str, gateway_redis: str
) -> None:
    r = _chat(gateway_url)
    assert r.status_code == 200, r.text
    ids = r.headers.get_list("x-request-id")
    assert len(ids) == 1 and "," not in ids[0], ids
    assert r.json()["id"] == f"chatcmpl-{ids[0]}"
    record = _ledger(gateway_redis, ids[0])
    assert record is not None and record.request_id == ids[0]
    for given in (r.json()["id"], ids[0]):
        fb = httpx.post(
            f"{gateway_url}/v1/feedback", json={"request_id": given, "rating": 1}, timeout=30
        )
        assert fb.status_code == 200, fb.text
        assert fb.json()["request_id"] == ids[0]


def test_a_clients_own_request_id_is_honoured(gateway_url: str) -> None:
    r = _chat(gateway_url, **{"x-request-id": "my-client-id-7"})
    assert r.status_code == 200, r.text
    assert r.headers.get_list("x-request-id") == ["my-client-id-7"]
    assert r.json()["id"] == "chatcmpl-my-client-id-7"
