"""Saturation without Ray: a deployment handle refusing work (Serve's BackPressureError when
`max_queued_requests` is exceeded) must reach the client as a clear 429 with Retry-After, after
the chain's other experts had their chance. The integration suite checks the real Serve path."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import httpx
import pytest

from experts.base import Completion, GenerationParams, Message, ModelInfo, StreamChunk
from experts.registry import build_backend
from router.config import parse_policy
from router.finance.access import Access
from router.serving.gateway import Gateway
from router.serving.http.api import create_api
from router.serving.http.state import AppState
from router.serving.service import RouterService
from tests.doubles import KeywordClassifier

POLICY = """
version: 1
experts:
  busy: {backend: fake}
  spare: {backend: fake}
routing:
  fallback: spare
  routes:
    - {domain: code, experts: [busy], examples: [write a python function]}
"""


class BackPressureError(Exception):
    """Stands in for ray.serve.exceptions.BackPressureError (same name and attributes)."""

    def __init__(self, retry_after_s: float | None = None) -> None:
        super().__init__("Request dropped due to backpressure")
        self.status_code = 503
        self.retry_after_s = retry_after_s


class FullQueue:
    """An expert handle whose deployment queue is full."""

    def __init__(self, retry_after_s: float | None) -> None:
        self.retry_after_s = retry_after_s
        self.calls = 0

    async def generate(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        self.calls += 1
        raise BackPressureError(self.retry_after_s)

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[StreamChunk]:
        self.calls += 1
        raise BackPressureError(self.retry_after_s)
        yield StreamChunk("")  # pragma: no cover - makes this an async generator

    async def describe(self) -> ModelInfo:
        return ModelInfo("fake", "busy", 4096, {})

    async def health(self) -> bool:
        return True


def client(spare_full: bool, retry_after_s: float | None = None) -> httpx.AsyncClient:
    config = parse_policy(POLICY)
    busy = FullQueue(retry_after_s)
    spare = (
        FullQueue(retry_after_s) if spare_full else build_backend("spare", config.experts["spare"])
    )
    from router.serving.callers import InProcessExpert

    experts = {"busy": busy, "spare": spare if spare_full else InProcessExpert(spare)}
    service = RouterService(config, KeywordClassifier({"python": "code"}), experts)
    app = create_api(AppState(Gateway(service, experts), Access(config.gateway.auth)))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


def body(model: str = "auto", stream: bool = False) -> dict[str, object]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": "python"}]}


async def test_a_full_queue_fails_over_to_the_next_expert() -> None:
    async with client(spare_full=False) as c:
        r = await c.post("/v1/chat/completions", json=body())
    assert r.status_code == 200
    assert r.headers["x-slm-router-expert"] == "spare"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("retry_after_s", "header"), [(None, "1"), (2.4, "2"), (7, "7")])
async def test_pinned_saturated_expert_is_a_429_with_retry_after(
    stream: bool, retry_after_s: float | None, header: str
) -> None:
    async with client(spare_full=False, retry_after_s=retry_after_s) as c:
        r = await c.post("/v1/chat/completions", json=body("busy", stream))
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == header
    err = r.json()["error"]
    assert err["type"] == "rate_limit_exceeded" and err["code"] == "expert_overloaded"
    assert "capacity" in err["message"]


async def test_whole_chain_saturated_is_a_429() -> None:
    async with client(spare_full=True) as c:
        r = await c.post("/v1/chat/completions", json=body())
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    assert "every expert in the chain failed" in r.json()["error"]["message"]


def test_serve_backpressure_error_translates_to_overloaded() -> None:
    exceptions = pytest.importorskip("ray.serve.exceptions")
    from experts.errors import ExpertOverloaded
    from router.serving.service import translate

    err = translate(exceptions.BackPressureError(5, 1), "busy")
    assert isinstance(err, ExpertOverloaded) and err.retry_after == 1.0
    err = translate(exceptions.BackPressureError(5, 1, 429, 3.0), "busy")
    assert isinstance(err, ExpertOverloaded) and err.retry_after == 3.0
