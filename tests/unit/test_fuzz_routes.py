"""Every route fuzzed (issue 19.4), on the real app with a real Redis so the ledger, spend and
feedback routes are mounted: schemathesis over the whole OpenAPI schema (every operation, path
parameters included) and hypothesis on the routes that read their own body (feedback). The
property of tests/unit/test_fuzz_http.py: never a 5xx, every error in OpenAI's envelope; and no
traceback in the log."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.config import parse_policy
from router.serving.http.api import create_api
from router.serving.wiring import build_state
from tests.unit.test_fuzz_http import _unsuited_checks, any_text, assert_envelope

POLICY = Path(__file__).parent.parent / "policies" / "fake.yaml"
FEW = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=20,
)


def _app(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    mp = pytest.MonkeyPatch()
    mp.setenv("SLM_ROUTER_SPOOL_DIR", str(tmp_path_factory.mktemp("spool")))
    try:
        config = parse_policy(POLICY.read_text(), str(POLICY))
        yield create_api(build_state(config, None, {}, redis_url))
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def app(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from _app(redis_server.url, tmp_path_factory)


@pytest.fixture(scope="module")
def own_app(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A second app for Caller: its Redis connections belong to Caller's event loop."""
    yield from _app(redis_server.url, tmp_path_factory)


class Caller:
    def __init__(self, app: Any) -> None:
        self.loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30)

    def __call__(self, method: str, path: str, body: bytes | None = None) -> httpx.Response:
        headers = {"content-type": "application/json"}
        call = self.client.request(method, path, content=body, headers=headers)
        r = self.loop.run_until_complete(call)
        assert_envelope(r.status_code, r.content, r.headers)
        return r


@pytest.fixture(scope="module")
def call(own_app: Any) -> Iterator[Caller]:
    caller = Caller(own_app)
    yield caller
    caller.loop.run_until_complete(caller.client.aclose())
    caller.loop.close()


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    with caplog.at_level(logging.ERROR):
        yield
    tracebacks = [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
    assert not tracebacks, [r.getMessage() for r in tracebacks]


@schemathesis.check
def envelope(ctx: Any, response: Any, case: Any) -> bool | None:
    assert_envelope(response.status_code, response.content, response.headers)
    return None


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_every_operation(app: Any, mode: str) -> None:
    from schemathesis import GenerationMode

    schema: Any = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert labels >= {
        "POST /v1/feedback",
        "GET /v1/feedback/{request_id}",
        "GET /v1/router/status",
        "GET /metrics",
        "GET /v1/models",
        "GET /healthz",
        "GET /readyz",
    }, labels
    excluded = _unsuited_checks()
    for op in operations:
        if mode == "negative" and not len(op.body):
            continue  # nothing to break without a body (any path string is valid)

        @settings(
            max_examples=15,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(op.as_strategy(generation_mode=GenerationMode(mode)))
        def run(case: Any) -> None:
            case.validate_response(case.call(), checks=[envelope], excluded_checks=excluded)

        run()


@FEW
@given(json_values)
def test_any_json_as_feedback(call: Caller, value: Any) -> None:
    r = call("POST", "/v1/feedback", json.dumps(value).encode())
    assert r.status_code in (400, 404), r.text


@FEW
@given(any_text)
def test_any_text_as_a_feedback_path_id(call: Caller, text: str) -> None:
    from urllib.parse import quote

    path = quote(text.encode("utf-8", "surrogatepass"), safe="")
    if path in ("", ".", ".."):
        return
    r = call("GET", f"/v1/feedback/{path}")
    assert r.status_code in (400, 404), r.text


@pytest.mark.parametrize("path", ["/v1/feedback", "/v1/route", "/v1/chat/completions"])
@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_deep_bodies_everywhere(call: Caller, path: str, opener: bytes) -> None:
    r = call("POST", path, opener * 30_000)
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_deep"


def test_internal_key_names_are_not_ids(call: Caller) -> None:
    for rid in ("idx", "req:anything", "req"):
        assert call("GET", f"/v1/feedback/{rid}").status_code == 400
