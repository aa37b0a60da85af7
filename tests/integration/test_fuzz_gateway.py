"""Bad input through the real Serve proxy and ingress (the session gateway, its real MiniLM
classifier): no 5xx, every error in OpenAI's envelope. The wide fuzzing runs in-process
(tests/unit/test_fuzz_http.py); this checks that Serve's proxy adds no crash of its own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_fuzz_http import any_text, assert_envelope

pytestmark = pytest.mark.integration
LIVE = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)


@pytest.fixture(scope="module")
def post(gateway_url: str) -> Iterator[Any]:
    with httpx.Client(base_url=gateway_url, timeout=60) as client:

        def send(body: bytes, path: str = "/v1/chat/completions") -> httpx.Response:
            r = client.post(path, content=body, headers={"content-type": "application/json"})
            assert_envelope(r.status_code, r.content, r.headers)
            return r

        yield send


def body(content: Any, **extra: Any) -> bytes:
    doc = {"model": "auto", "messages": [{"role": "user", "content": content}], **extra}
    return json.dumps(doc).encode()


@LIVE
@given(any_text)
def test_any_text_through_serve(post: Any, text: str) -> None:
    post(body(text))


@LIVE
@given(st.binary(max_size=200))
def test_binary_through_serve(post: Any, raw: bytes) -> None:
    post(raw)
    post(b'{"model":"auto","messages":[{"role":"user","content":"' + raw + b'"}]}')


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe\xfd",
        body("hi \ud800 there"),
        body([{"type": "text", "text": "\udfff"}]),
        body("hi", model="\ud800"),
        b'{"model":"auto","messages":[{"role":"user","content":'
        + b"[" * 50_000
        + b"]" * 50_000
        + b"}]}",
        body("word " * 300_000),
        body("x" * 3_000_000),
    ],
    ids=[
        "empty",
        "binary",
        "surrogate",
        "surrogate-part",
        "surrogate-model",
        "deep",
        "huge",
        "too-big",
    ],
)
def test_nasty_bodies_through_serve(post: Any, raw: bytes) -> None:
    r = post(raw)
    assert 400 <= r.status_code < 500
