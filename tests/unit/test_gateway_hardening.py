"""Adversarial inputs against the real app (create_api + build_state) with auth on and a real
Redis (issue 19.3-19.6, 14.2-14.3): /metrics needs an admin key, malformed input is a 4xx
envelope, every route counts against the key's rpm, header values are printable ASCII, one
request id names the answer, the ledger record and the feedback."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from router.config import parse_policy
from router.continuous.feedback import clean_request_id
from router.finance.keys import KeyStore
from router.finance.redis_server import make_client
from router.serving.http.headers import SafeHeaders, clean
from router.serving.http.limits import check_depth, json_depth
from router.serving.wiring import build_state

POLICY = """
version: 1
classifier: {kind: examples, oos_threshold: 0.3}
experts:
  cheap: {backend: fake, price: {input_per_1m: 1000, output_per_1m: 2000}}
routing:
  fallback: cheap
  allow_pinning: false
  on_disallowed_pin: ignore
  routes:
    - domain: code
      experts: [cheap]
      examples: [write a python function, fix this javascript bug]
gateway: {auth: true}
"""


@pytest.fixture
async def gw(redis_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SLM_ROUTER_SPOOL_DIR", str(tmp_path))
    await make_client(redis_server.url).flushdb()
    from router.serving.http.api import create_api

    state = build_state(parse_policy(POLICY), None, {}, redis_server.url)
    transport = httpx.ASGITransport(app=create_api(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client, KeyStore(make_client(redis_server.url))


async def _auth(keys: KeyStore, team: str = "alpha", **kw: object) -> dict[str, str]:
    created = await keys.create_key(team, **kw)  # type: ignore[arg-type]
    return {"authorization": f"Bearer {created.plaintext}"}


def chat(text: str = "write a python function", **kw: object) -> dict[str, object]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **kw}


def _is_envelope(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}


# ---- 19.3 /metrics ----------------------------------------------------------------------------
async def test_metrics_need_an_admin_key_with_auth_on(gw) -> None:  # type: ignore[no-untyped-def]
    client, keys = gw
    _is_envelope(await client.get("/metrics"), 401)
    _is_envelope(await client.get("/metrics", headers=await _auth(keys)), 403)
    r = await client.get("/metrics", headers=await _auth(keys, "ops", admin=True))
    assert r.status_code == 200 and "text/plain" in r.headers["content-type"]


# ---- 19.4 malformed input ---------------------------------------------------------------------
async def test_huge_max_tokens_is_a_400_not_a_503(gw) -> None:  # type: ignore[no-untyped-def]
    client, keys = gw
    auth = await _auth(keys)
    for field in ("max_tokens", "max_completion_tokens", "seed"):
        body = {**chat(), field: 10**20}
        r = await client.post("/v1/chat/completions", json=body, headers=auth)
        _is_envelope(r, 400)
        assert r.json()["error"]["param"] == field
    r = await client.post(
        "/v1/responses", json={"input": "hi", "max_output_tokens": 10**12}, headers=auth
    )
    _is_envelope(r, 400)


@pytest.mark.parametrize("path", ["/v1/feedback", "/v1/chat/completions", "/v1/route"])
async def test_deep_json_is_a_400_before_parsing(gw, path: str) -> None:  # type: ignore[no-untyped-def]
    client, keys = gw
    r = await client.post(path, content=b"[" * 30_000, headers=await _auth(keys))
    _is_envelope(r, 400)
    assert r.json()["error"]["code"] == "too_deep"


def test_depth_counts_brackets_outside_strings_only() -> None:
    assert json_depth(b'{"a": "[[[[[[", "b": [[1], {"c": "\\"]]"}]}') == 3
    assert json_depth(b"[]" * 1000) == 1
    check_depth(b'["' + b"[" * 1000 + b'"]')  # inside a string: fine
    with pytest.raises(Exception, match="deeper than 64"):
        check_depth(b"[" * 65 + b"]" * 65)


@pytest.mark.parametrize("rid", ["idx", "req:abc", "a b", "x" * 200, "%00"])
async def test_feedback_path_id_is_validated(gw, rid: str) -> None:  # type: ignore[no-untyped-def]
    client, keys = gw
    r = await client.get(f"/v1/feedback/{rid}", headers=await _auth(keys))
    assert r.status_code in (400, 404), r.text
    assert "error" in r.json()


# ---- 19.5 rate limits on every route -----------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/route", chat()),
        ("GET", "/v1/router/status", None),
        ("GET", "/v1/models", None),
        ("POST", "/v1/feedback", {"request_id": "abc", "rating": 1}),
    ],
)
async def test_rpm_counts_on_every_route(gw, method: str, path: str, body: object) -> None:  # type: ignore[no-untyped-def]
    client, keys = gw
    auth = await _auth(keys, rpm=2)
    for _ in range(2):
        r = await client.request(method, path, json=body, headers=auth)
        assert r.status_code != 429, r.text
    r = await client.request(method, path, json=body, headers=auth)
    _is_envelope(r, 429)
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert "retry-after" in r.headers


# ---- 19.6 headers ------------------------------------------------------------------------------
def test_clean_keeps_printable_ascii_only() -> None:
    assert clean("a\x00b\x01c\x7fd\u00e9\u4e2d") == "a?b?c?d??"
    assert clean("line\r\nbreak\ttab") == "line break tab"
    assert len(clean("x" * 10_000)) == 256


async def test_every_header_set_anywhere_is_cleaned() -> None:
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        headers = [(b"x-a", b"ok\x00\x01\x7f\xff"), (b"x-request-id", b"1")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    safe = SafeHeaders(app, drop=frozenset({b"x-request-id"}))
    transport = httpx.ASGITransport(app=safe)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/")
    assert r.headers["x-a"] == "ok????"
    assert "x-request-id" not in r.headers


async def test_control_characters_in_a_pinned_name_do_not_break_the_answer(gw) -> None:  # type: ignore[no-untyped-def]
    client, keys = gw
    body = chat(model="evil\x00\x01\x7fname")
    r = await client.post("/v1/chat/completions", json=body, headers=await _auth(keys))
    assert r.status_code == 200, r.text
    for name, value in r.headers.items():
        assert all(0x20 <= ord(c) < 0x7F for c in value), (name, value)


# ---- 14.2 / 14.3 request ids -------------------------------------------------------------------
def test_clean_request_id() -> None:
    assert clean_request_id("chatcmpl-abc123") == "abc123"
    assert clean_request_id("0f" * 16) == "0f" * 16
    for bad in ("idx", "req", "a:b", "a,b", "", "-x", "x" * 129):
        assert clean_request_id(bad) is None


async def test_one_request_id_and_feedback_by_either_id(gw) -> None:  # type: ignore[no-untyped-def]
    client, keys = gw
    auth = await _auth(keys)
    r = await client.post("/v1/chat/completions", json=chat(), headers=auth)
    assert r.status_code == 200, r.text
    assert len(r.headers.get_list("x-request-id")) == 1
    rid, cid = r.headers["x-request-id"], r.json()["id"]
    assert cid == f"chatcmpl-{rid}"
    for given in (cid, rid):
        fb = await client.post(
            "/v1/feedback", json={"request_id": given, "rating": 1}, headers=auth
        )
        assert fb.status_code == 200, fb.text
        assert fb.json()["request_id"] == rid
    got = await client.get(f"/v1/feedback/{cid}", headers=auth)
    assert got.status_code == 200 and got.json()["request_id"] == rid


async def test_a_clients_valid_request_id_is_honoured(gw) -> None:  # type: ignore[no-untyped-def]
    client, keys = gw
    auth = await _auth(keys)
    mine = {**auth, "x-request-id": "client-req-42"}
    r = await client.post("/v1/chat/completions", json=chat(), headers=mine)
    assert r.headers.get_list("x-request-id") == ["client-req-42"]
    assert r.json()["id"] == "chatcmpl-client-req-42"
    bad = {**auth, "x-request-id": "a, b"}
    r = await client.post("/v1/chat/completions", json=chat(), headers=bad)
    assert r.headers["x-request-id"] not in ("a, b", "")
