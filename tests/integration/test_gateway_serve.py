"""The real Serve application, driven by the stock openai client over loopback HTTP."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(gateway_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="x", max_retries=0, timeout=60)


def test_sync_auto_routes_to_domain_expert(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "write a python function to sort a list"}],
    )
    resp = raw.parse()
    assert raw.headers["x-slm-router-domain"] == "code"
    assert raw.headers["x-slm-router-expert"] == resp.model == "code-fake"
    assert raw.headers["x-slm-router-reason"]
    assert "sort a list" in resp.choices[0].message.content


def test_local_expert_in_own_deployment_after_fallback(client: openai.OpenAI) -> None:
    # math's chain is [broken, tiny]: the first fails before any token, the local model answers.
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "what is 12 times 7"}],
        max_tokens=5,
        temperature=0,
    )
    resp = raw.parse()
    assert raw.headers["x-slm-router-expert"] == "tiny" == resp.model
    assert 1 <= resp.usage.completion_tokens <= 5
    assert resp.usage.prompt_tokens > 5


def test_stream_through_deployment_handle(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    for chunk in stream:
        usage = chunk.usage or usage
        pieces.extend(c.delta.content or "" for c in chunk.choices)
    assert usage is not None and usage.completion_tokens >= 1
    # Greedy decoding is deterministic: the streamed text equals the non-streamed one.
    whole = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=6, temperature=0
    )
    assert "".join(pieces) == whole.choices[0].message.content


async def test_async_client_concurrent_requests(gateway_url: str) -> None:
    aclient = openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key="x", max_retries=0)
    results = await asyncio.gather(
        *(
            aclient.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": f"fix this javascript bug {i}"}]
            )
            for i in range(12)
        )
    )
    assert [r.model for r in results] == ["code-fake"] * 12
    assert all(f"bug {i}" in r.choices[0].message.content for i, r in enumerate(results))


def test_errors_cross_serve_in_envelope(client: openai.OpenAI, gateway_url: str) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="general-fake", messages=[{"role": "user", "content": "w " * 200}]
        )
    assert err.value.body["code"] == "context_length_exceeded"
    r = httpx.post(
        f"{gateway_url}/v1/chat/completions",
        content=b"{",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    with pytest.raises(openai.APIStatusError) as err5:
        client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "x"}])
    assert err5.value.status_code == 503


def test_prompt_over_local_context_window_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hello " * 400}]
        )
    assert err.value.body["code"] == "context_length_exceeded"


def test_models_route_and_readiness(client: openai.OpenAI, gateway_url: str) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == "auto" and {"tiny", "smollm2", "code-fake", "broken", "general-fake"} <= set(
        ids
    )
    tiny = next(m for m in client.models.list().data if m.id == "tiny")
    assert tiny.model_extra["metadata"]["context_window"] == 256
    plan = httpx.post(
        f"{gateway_url}/v1/route",
        json={"messages": [{"role": "user", "content": "solve for y in 2y = 10"}]},
    ).json()
    assert plan["classification"]["label"] == "math"
    assert plan["plan"]["expert"] == "broken" and "tiny" in plan["plan"]["fallbacks"]
    assert httpx.get(f"{gateway_url}/readyz").status_code == 200


def test_ledger_counts_every_request_exactly(client: openai.OpenAI, gateway_redis: str) -> None:
    from router.finance.ledger import Ledger

    async def totals() -> dict[str, int]:
        ledger = Ledger(gateway_redis, "/tmp/unused-spool.jsonl")
        try:
            rows = await ledger.totals(group_by="expert")
            return {r.group[0]: r.requests for r in rows}
        finally:
            await ledger.aclose()

    import time

    before = asyncio.run(totals())
    for i in range(5):
        client.chat.completions.create(
            model="code-fake", messages=[{"role": "user", "content": f"ledger probe {i}"}]
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = asyncio.run(totals())
        if after.get("code-fake", 0) - before.get("code-fake", 0) >= 5:
            break
        time.sleep(0.2)
    assert after.get("code-fake", 0) - before.get("code-fake", 0) == 5


def test_metrics_exposes_request_histograms(client: openai.OpenAI, gateway_url: str) -> None:
    client.chat.completions.create(model="code-fake", messages=[{"role": "user", "content": "m"}])
    text = httpx.get(f"{gateway_url}/metrics").text
    assert 'expert="code-fake"' in text
    assert "_bucket" in text  # histograms, not just counters


@pytest.mark.slow
def test_real_smollm2_answers_through_the_gateway(client: openai.OpenAI) -> None:
    """The shipped GGUF model, loaded by the real loading code, answers a real question."""
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2",
        messages=[
            {"role": "user", "content": "What is the capital of France? Answer in one word."}
        ],
        max_tokens=12,
        temperature=0,
    )
    resp = raw.parse()
    assert raw.headers["x-slm-router-expert"] == "smollm2"
    assert "paris" in resp.choices[0].message.content.lower()
    assert resp.usage.prompt_tokens > 10 and 1 <= resp.usage.completion_tokens <= 12
    stream = client.chat.completions.create(
        model="smollm2",
        messages=[
            {"role": "user", "content": "What is the capital of France? Answer in one word."}
        ],
        max_tokens=12,
        temperature=0,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == resp.choices[0].message.content


def test_lora_experts_share_one_base_deployment(client: openai.OpenAI) -> None:
    from ray import serve

    answers = {}
    for name in ("tiny-maths", "tiny-echo"):
        resp = client.chat.completions.create(
            model=name,
            messages=[{"role": "user", "content": "What is 3 plus 3?"}],
            max_tokens=6,
            temperature=0,
        )
        assert resp.model == name
        answers[name] = resp.choices[0].message.content
    base = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "What is 3 plus 3?"}],
        max_tokens=6,
        temperature=0,
    )
    # Different adapters on one base answer differently from each other or from the base.
    assert len({answers["tiny-maths"], answers["tiny-echo"], base.choices[0].message.content}) >= 2
    deployments = serve.status().applications["slm-router"].deployments
    assert "lora-tiny-maths" in deployments and "expert-tiny-echo" not in deployments
    meta = {m.id: m.model_extra["metadata"] for m in client.models.list().data}
    assert set(meta["tiny-maths"]["adapters"]) == {"tiny-maths", "tiny-echo"}


def test_moe_expert_reports_total_and_active_parameters(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="tiny-moe", messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0
    )
    assert resp.model == "tiny-moe" and resp.usage.completion_tokens >= 1
    meta = next(m for m in client.models.list().data if m.id == "tiny-moe").model_extra["metadata"]
    total, active = meta["total_params"], meta["active_params_per_token"]
    assert total > active > 0
