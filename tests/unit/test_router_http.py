"""The HTTP surface without Ray: wire format, routing headers, fallbacks and error envelopes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI, BadRequestError, NotFoundError

from experts.registry import build_backend
from router.config import load_policy
from router.continuous.live import Continuous
from router.finance.access import Access
from router.serving.callers import InProcessExpert
from router.serving.gateway import Gateway
from router.serving.http.api import create_api
from router.serving.http.state import AppState
from router.serving.service import RouterService
from tests.doubles import KeywordClassifier

POLICY = Path(__file__).parent.parent / "policies" / "fake.yaml"


@pytest.fixture
def api():
    config = load_policy(POLICY)
    experts = {n: InProcessExpert(build_backend(n, s)) for n, s in config.experts.items()}
    clf = KeywordClassifier({"python": "code", "times": "math", "sum": "math"})
    continuous = Continuous(config, clf)
    service = RouterService(config, clf, experts, continuous=continuous)
    gw = Gateway(service, experts)
    return create_api(AppState(gw, Access(config.gateway.auth), continuous=continuous))


@pytest.fixture
async def http(api):
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client


@pytest.fixture
async def oai(http):
    yield AsyncOpenAI(base_url="http://gw/v1", api_key="x", http_client=http, max_retries=0)


def chat(content: str, **kw):
    return {"model": "auto", "messages": [{"role": "user", "content": content}], **kw}


async def test_routed_answer_names_the_expert(oai):
    raw = await oai.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "write python please"}]
    )
    resp = raw.parse()
    assert resp.model == "code-fake"
    assert resp.choices[0].message.content == "[code-fake] write python please"
    assert raw.headers["x-slm-router-expert"] == "code-fake"
    assert raw.headers["x-slm-router-domain"] == "code"
    assert "code" in raw.headers["x-slm-router-reason"]
    assert resp.usage.completion_tokens == 4
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 4


async def test_failing_first_expert_falls_back_along_the_chain(oai):
    raw = await oai.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "what is 3 times 4"}]
    )
    assert raw.parse().model == "math-fake"
    assert raw.headers["x-slm-router-domain"] == "math"


async def test_out_of_scope_goes_to_fallback(oai):
    resp = await oai.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "tell me a story"}]
    )
    assert resp.model == "general-fake"


async def test_pinned_model_skips_routing(oai):
    resp = await oai.chat.completions.create(
        model="math-fake", messages=[{"role": "user", "content": "write python"}]
    )
    assert resp.model == "math-fake"


async def test_stream_chunks_end_with_done_and_usage(oai):
    stream = await oai.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "python one two"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == "[code-fake] python one two"
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == 4


async def test_raw_sse_framing(http):
    r = await http.post("/v1/chat/completions", json=chat("python", stream=True))
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [line for line in r.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)
    assert json.loads(events[0][6:])["choices"][0]["delta"]["role"] == "assistant"


async def test_max_tokens_and_stop_are_honoured(oai):
    resp = await oai.chat.completions.create(
        model="code-fake",
        messages=[{"role": "user", "content": "a b c d e f"}],
        max_tokens=2,
    )
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 2
    resp = await oai.chat.completions.create(
        model="code-fake", messages=[{"role": "user", "content": "a b STOP c"}], stop=["STOP"]
    )
    assert resp.choices[0].message.content == "[code-fake] a b"


async def test_unknown_model_is_404(oai):
    with pytest.raises(NotFoundError) as err:
        await oai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert err.value.body["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (json.dumps({"model": "auto"}).encode(), "messages"),
        (json.dumps({"model": "auto", "messages": []}).encode(), "messages"),
        (
            json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(),
            "messages[0].role",
        ),
        (
            json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(),
            "messages[0].content",
        ),
        (
            json.dumps(
                {"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}
            ).encode(),
            "temperature",
        ),
        (
            json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}).encode(),
            "max_tokens",
        ),
        (json.dumps({"messages": [{"role": "user", "content": "   "}]}).encode(), "messages"),
        (json.dumps([1, 2]).encode(), None),
    ],
)
async def test_bad_requests_get_400_envelopes(http, body, param):
    r = await http.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["message"]
    if param:
        assert (err["param"] or "").startswith(param)


async def test_prompt_longer_than_context_window_is_400(oai):
    with pytest.raises(BadRequestError) as err:
        await oai.chat.completions.create(
            model="general-fake", messages=[{"role": "user", "content": "word " * 100}]
        )
    assert err.value.body["code"] == "context_length_exceeded"


async def test_oversized_body_is_413(http):
    r = await http.post("/v1/chat/completions", json=chat("x" * 3_000_000))
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


async def test_all_experts_failing_is_a_5xx_envelope(oai):
    from openai import APIStatusError

    with pytest.raises(APIStatusError) as err:
        await oai.chat.completions.create(
            model="broken", messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.status_code == 503
    assert "broken" in err.value.body["message"]


async def test_unknown_path_and_method_use_envelope(http):
    r = await http.get("/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()
    r = await http.get("/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()


async def test_models_lists_auto_and_experts(oai):
    models = await oai.models.list()
    ids = [m.id for m in models.data]
    assert ids[0] == "auto"
    assert set(ids[1:]) == {"code-fake", "math-fake", "broken", "general-fake"}


async def test_route_dry_run_generates_nothing(http, api):
    r = await http.post("/v1/route", json=chat("python code"))
    body = r.json()
    assert body["plan"]["expert"] == "code-fake"
    assert body["classification"]["label"] == "code"
    assert body["plan"]["reason"]


async def test_health_and_readiness(http):
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    r = await http.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True


async def test_router_status_reports_classifier_and_drift_windows(http):
    for _ in range(3):
        await http.post("/v1/chat/completions", json=chat("python"))
    await http.post("/v1/route", json=chat("python"))  # dry runs are not observed
    r = await http.get("/v1/router/status")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["drift"]["samples"] == 3
    assert "classifier" in body
