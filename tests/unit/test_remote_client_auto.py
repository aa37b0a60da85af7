"""`client: auto` (the default): the direct httpx client only where litellm adds nothing."""

from __future__ import annotations

import pytest

from experts.openai_http import OpenAIHTTPBackend
from experts.registry import build_backend, remote_client
from experts.remote import RemoteBackend
from experts.spec import ExpertSpec

BASE = "http://127.0.0.1:9/v1"


def spec(**fields: object) -> ExpertSpec:
    return ExpertSpec.model_validate({"backend": "remote", **fields})


@pytest.mark.parametrize(
    ("fields", "client"),
    [
        # a self-hosted OpenAI-compatible server: a model litellm's table does not list
        ({"model": "openai/my-tuned-slm", "api_base": BASE}, "httpx"),
        # litellm knows this model and adapts requests to it: keep litellm
        ({"model": "openai/gpt-4o-mini", "api_base": BASE}, "litellm"),
        # no api_base: litellm resolves the provider's own endpoint
        ({"model": "openai/my-tuned-slm"}, "litellm"),
        # another provider's wire format
        ({"model": "anthropic/claude-3-haiku-20240307", "api_base": BASE}, "litellm"),
        ({"model": "openai/my-embedder", "api_base": BASE, "kind": "embedding"}, "litellm"),
        # explicit choices win
        ({"model": "openai/my-tuned-slm", "api_base": BASE, "client": "litellm"}, "litellm"),
        ({"model": "openai/gpt-4o-mini", "api_base": BASE, "client": "httpx"}, "httpx"),
    ],
)
def test_auto_resolves_per_model(fields: dict[str, object], client: str) -> None:
    assert spec(**fields).client == fields.get("client", "auto")
    assert remote_client(spec(**fields)) == client


def test_build_backend_follows_the_resolution() -> None:
    fast = build_backend("a", spec(model="openai/my-tuned-slm", api_base=BASE))
    known = build_backend("b", spec(model="openai/gpt-4o-mini", api_base=BASE))
    assert isinstance(fast, OpenAIHTTPBackend) and fast.client_name == "httpx"
    assert isinstance(known, RemoteBackend) and not isinstance(known, OpenAIHTTPBackend)
    # The same capabilities as litellm derived for an unlisted openai/ model before auto.
    caps = fast.derived_capabilities()
    assert caps.tools and caps.json_schema and caps.logprobs and not caps.vision
