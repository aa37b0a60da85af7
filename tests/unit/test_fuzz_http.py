"""Fuzzing the HTTP surface in-process: schemathesis against the gateway's own OpenAPI schema,
and hypothesis on what reaches the classifier (empty, huge, binary, deeply nested, invalid
UTF-8, lone surrogates). The app is the real one (router.serving.wiring.build_state +
create_api) with fake experts, the real `examples` classifier and no Redis.

Properties: never a 5xx, never an exception out of the ASGI app, every error in OpenAI's
envelope with JSON content type.
"""

from __future__ import annotations

import asyncio
import json
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

POLICY = Path(__file__).parent.parent / "policies" / "fake.yaml"
CHAT = "/v1/chat/completions"
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)


@pytest.fixture(scope="module")
def fuzz_app() -> Any:
    # The real classifier loads in seconds: once per module, and only when these tests run.
    # An embedding expert too, so /v1/embeddings is fuzzed past routing.
    text = POLICY.read_text().replace(
        "experts:\n", "experts:\n  embed-fake: {backend: fake, kind: embedding}\n", 1
    )
    return create_api(build_state(parse_policy(text, str(POLICY)), None, {}, None))


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


class Caller:
    """Sync calls into the ASGI app on a loop of our own (hypothesis tests are sync)."""

    def __init__(self, app: Any) -> None:
        self.loop = asyncio.new_event_loop()
        # An exception escaping the app becomes a 500 here, so the property sees it.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30)

    def post(self, body: bytes, path: str = CHAT) -> httpx.Response:
        headers = {"content-type": "application/json"}
        return self.loop.run_until_complete(self.client.post(path, content=body, headers=headers))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


@pytest.fixture(scope="module")
def call(fuzz_app: Any) -> Iterator[Caller]:
    caller = Caller(fuzz_app)
    try:
        yield caller
    finally:
        caller.close()


def assert_envelope(status: int, body: bytes, headers: Any) -> None:
    """The contract for every answer: no 5xx; an error is OpenAI's envelope, as JSON."""
    assert status < 500, f"server error {status}: {body[:300]!r}"
    if status < 400:
        return
    ctype = headers.get("content-type", "")
    ctype = ctype[0] if isinstance(ctype, list) else ctype  # schemathesis: lists of values
    assert ctype.startswith("application/json"), headers
    doc = json.loads(body)
    assert set(doc) == {"error"}, doc
    err = doc["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]


def check(resp: httpx.Response) -> httpx.Response:
    assert_envelope(resp.status_code, resp.content, resp.headers)
    if resp.status_code == 200:
        json.loads(resp.content)  # an answer must be valid JSON too (surrogates included)
    return resp


def chat_body(content: Any, **extra: Any) -> bytes:
    doc = {"model": "auto", "messages": [{"role": "user", "content": content}], **extra}
    # ensure_ascii: lone surrogates travel as \ud800 escapes, as JSON allows.
    return json.dumps(doc, ensure_ascii=True).encode()


# ---- schemathesis ----------------------------------------------------------------------------


def _unsuited_checks() -> list[Any]:
    from schemathesis.checks import (
        negative_data_rejection,
        positive_data_acceptance,
        response_schema_conformance,
        status_code_conformance,
    )

    # The schema declares FastAPI's 422 for validation errors while the gateway answers 400
    # (OpenAI's status); schema-valid data can still be refused by routing (no user message,
    # over the context window); response bodies are not declared (response_model=None).
    return [
        status_code_conformance,
        positive_data_acceptance,
        negative_data_rejection,
        response_schema_conformance,
    ]


@schemathesis.check
def openai_envelope(ctx: Any, response: Any, case: Any) -> bool | None:
    assert_envelope(response.status_code, response.content, response.headers)
    return None


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_openapi_schema_fuzz(fuzz_schema: Any, mode: str) -> None:
    # Strategies per operation rather than schema.parametrize: schemathesis' lazy pytest
    # integration does not run under pytest 9.
    from schemathesis import GenerationMode

    operations = [result.ok() for result in fuzz_schema.get_all_operations()]
    assert {op.label for op in operations} >= {
        "POST /v1/chat/completions",
        "POST /v1/route",
        "POST /v1/responses",
        "POST /v1/embeddings",
        "POST /v1/completions",
    }
    excluded = _unsuited_checks()
    for op in operations:
        if mode == "negative" and not len(op.body):
            continue  # nothing to break without a body (any path string is valid)
        strategy = op.as_strategy(generation_mode=GenerationMode(mode))

        @settings(
            max_examples=30 if "POST" in op.label else 5,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(strategy)
        def run(case: Any) -> None:
            response = case.call()
            case.validate_response(response, checks=[openai_envelope], excluded_checks=excluded)

        run()


# ---- hypothesis on the classifier's input ---------------------------------------------------

# Every code point, lone surrogates (category Cs) included.
any_char = st.characters(codec=None, exclude_categories=())
surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=())
# st.text drops surrogates whatever its alphabet: build the strings from characters instead.
any_text = st.lists(any_char | surrogate, max_size=200).map("".join)


@FUZZ
@given(any_text)
def test_any_text_content(call: Caller, text: str) -> None:
    resp = check(call.post(chat_body(text)))
    if not text.strip():
        assert resp.status_code == 400


@FUZZ
@given(st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": any_text}), max_size=4))
def test_text_parts_content(call: Caller, parts: list[dict[str, str]]) -> None:
    check(call.post(chat_body(parts)))


@FUZZ
@given(any_text, any_text)
def test_surrogates_in_other_fields(call: Caller, model: str, user: str) -> None:
    # model and user are echoed in errors and routing; an unencodable echo must not 500.
    doc = {"model": model, "user": user, "messages": [{"role": "user", "content": "hi"}]}
    check(call.post(json.dumps(doc).encode()))
    check(call.post(json.dumps(doc).encode(), path="/v1/route"))


@FUZZ
@given(st.binary(max_size=300))
def test_binary_body(call: Caller, body: bytes) -> None:
    check(call.post(body))


@FUZZ
@given(st.binary(max_size=100))
def test_invalid_utf8_inside_a_string(call: Caller, raw: bytes) -> None:
    raw = raw.replace(b'"', b"").replace(b"\\", b"")
    body = b'{"model":"auto","messages":[{"role":"user","content":"write ' + raw + b'"}]}'
    check(call.post(body))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=20,
)


@FUZZ
@given(json_values)
def test_any_json_as_content(call: Caller, value: Any) -> None:
    check(call.post(chat_body(value)))


@FUZZ
@given(json_values)
def test_any_json_as_body(call: Caller, value: Any) -> None:
    check(call.post(json.dumps(value).encode()))


@pytest.mark.parametrize("depth", [10, 1_000, 100_000])
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_deeply_nested_content(call: Caller, depth: int, kind: str) -> None:
    if kind == "dict":
        nested = '{"a":' * depth + "1" + "}" * depth
    else:
        nested = "[" * depth + "1" + "]" * depth
    body = '{"model":"auto","messages":[{"role":"user","content":' + nested + "}]}"
    assert len(body) < 2_000_000  # under the body limit: the parser must cope, not the limit
    resp = check(call.post(body.encode()))
    assert resp.status_code == 400


def test_empty_and_whitespace_content(call: Caller) -> None:
    for content in ["", " \n\t ", None, []]:
        resp = check(call.post(chat_body(content)))
        assert resp.status_code == 400
        assert resp.json()["error"]["param"] == "messages"
    assert check(call.post(b"")).status_code == 400


def test_huge_content_under_the_body_limit(call: Caller) -> None:
    # ~1.8 MB of words: classified (truncated by the encoder), then refused by the expert's
    # context window, not by a crash or a timeout.
    resp = check(call.post(chat_body("word " * 360_000)))
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize(
    ("field", "param"),
    [("content", "messages[0].content"), ("model", "model"), ("user", "user"), ("stop", "stop")],
)
def test_lone_surrogates_are_refused_at_the_edge(call: Caller, field: str, param: str) -> None:
    doc: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    if field == "content":
        doc["messages"][0]["content"] = "write python \ud800 now"
    else:
        doc[field] = "x\udfffy"
    for path in (CHAT, "/v1/route"):
        resp = check(call.post(json.dumps(doc).encode(), path=path))
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["param"] == param


def test_oversized_body_without_length_is_413(fuzz_app: Any) -> None:
    """A chunked body (no content-length) is counted as it arrives: 413, not FastAPI's 400."""

    async def run() -> httpx.Response:
        async def chunks() -> Any:
            yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
            for _ in range(40):
                yield b"y" * 65_536
            yield b'"}]}'

        transport = httpx.ASGITransport(app=fuzz_app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.post(CHAT, content=chunks())

    resp = check(asyncio.run(run()))
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large"
