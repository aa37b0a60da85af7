"""The real gateway app (router.serving.wiring.build_state + create_api, real Redis ledger) served
on a loopback port, with remote experts pointing at the OpenAI-compatible fake upstream of
tests/unit/openai_upstream.py (a real HTTP server that answers tool calls, JSON, logprobs,
refusals and embeddings). Clients are the stock openai SDK, sync and async.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.unit.openai_upstream import Upstream, serving

POLICY = """
version: 1
classifier: {{kind: examples}}
experts:
  small: {{backend: fake, description: plain chat only}}
  flaky: {{backend: fake, fail: after_first_token}}
  up-tools:
    backend: remote
    model: openai/tools
    api_base: {url}
    price: {{input_per_1m: 1.0, output_per_1m: 2.0}}
  up-json: {{backend: remote, model: openai/json, api_base: {url}, client: httpx}}
  up-logprobs: {{backend: remote, model: openai/logprobs, api_base: {url}}}
  up-refuse: {{backend: remote, model: openai/refuse, api_base: {url}, client: httpx}}
  up-echo: {{backend: remote, model: openai/echo, api_base: {url}, capabilities: {{vision: true}}}}
  embed-remote:
    backend: remote
    kind: embedding
    model: openai/text-embedding-3-small
    api_base: {url}
    price: {{input_per_1m: 0.02}}
  embed-fake: {{backend: fake, kind: embedding}}
  minilm:
    backend: local
    kind: embedding
    model: builtin:all-minilm-l6-v2
    price: {{per_replica_hour: 0.05}}
routing:
  fallback: small
  routes:
    - domain: code
      experts: [small]
      examples: [write a python function, fix this javascript bug, explain this SQL query]
{extra}"""


def build_gateway(upstream: Upstream, redis_url: str | None, extra: str = "") -> Any:
    from router.config import parse_policy
    from router.serving.http.api import create_api
    from router.serving.wiring import build_state

    config = parse_policy(POLICY.format(url=upstream.base_url, extra=extra), "loopback.yaml")
    return create_api(build_state(config, None, {}, redis_url))


@pytest.fixture(scope="module")
def gateway(upstream: Upstream, redis_server: Any) -> Iterator[str]:
    with serving(build_gateway(upstream, redis_server.url)) as url:
        yield url


@pytest.fixture(scope="module")
def sdk(gateway: str) -> openai.OpenAI:
    """The stock openai client, sync, pointed at the gateway."""
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key="x", max_retries=0)


@pytest.fixture
def asdk(gateway: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key="x", max_retries=0)


async def aledger_record(redis_url: str, request_id: str, timeout_s: float = 10.0) -> Any:
    """The ledger's record of one request (written asynchronously: polled)."""
    from router.finance.ledger import Ledger

    ledger = Ledger(redis_url, "/tmp/unused-spool.jsonl")
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            record = await ledger.get(request_id)
            if record is not None:
                return record
            await asyncio.sleep(0.1)
    finally:
        await ledger.aclose()
    raise AssertionError(f"no ledger record for {request_id}")


def ledger_record(redis_url: str, request_id: str, timeout_s: float = 10.0) -> Any:
    return asyncio.run(aledger_record(redis_url, request_id, timeout_s))
