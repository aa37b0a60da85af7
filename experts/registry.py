"""Backends by kind, imported only when first built (torch and litellm stay out of the gateway
until an expert needs them).

Extension point: `register_backend(kind, factory)`. The LoRA / MoE tooling registers a factory
for "lora" (used for `backend: local` specs that name an `adapter`) or overrides "local";
`LocalBackend.from_loaded` lets such a factory reuse the batching engine with its own model.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from experts.base import Backend
from experts.errors import ExpertUnavailable
from experts.spec import ExpertSpec

Factory = Callable[[str, ExpertSpec], Backend]

# kind -> "module:attribute" of a factory, resolved lazily.
_BUILTIN: dict[str, str] = {
    "local": "experts.local:LocalBackend.from_spec",
    "remote": "experts.registry:_build_remote",
    "fake": "experts.registry:_build_fake",
    "lora": "experts.lora:build_single_adapter",
    "local-embedding": "experts.embeddings:LocalEmbeddingBackend.from_spec",
    "remote-embedding": "experts.embeddings:RemoteEmbeddingBackend.from_spec",
    "fake-embedding": "experts.embeddings:FakeEmbeddingBackend.from_spec",
}
_registered: dict[str, Factory] = {}


def register_backend(kind: str, factory: Factory) -> None:
    """Add or replace the factory for a backend kind."""
    _registered[kind] = factory


def backend_kind(spec: ExpertSpec) -> str:
    """The registry key for a spec: a local spec with an adapter goes to 'lora', an embedding
    expert to '<backend>-embedding'."""
    if spec.kind == "embedding":
        return f"{spec.backend}-embedding"
    if spec.backend == "local" and spec.adapter:
        return "lora"
    return spec.backend


def build_backend(name: str, spec: ExpertSpec) -> Backend:
    """Construct the backend for expert `name` (blocking: local models load here), with the
    YAML's capability overrides applied (Backend.capabilities())."""
    backend = _factory(backend_kind(spec))(name, spec)
    if spec.capabilities is not None:
        backend.capability_overrides = spec.capabilities.overrides()
    return backend


def _factory(kind: str) -> Factory:
    if kind in _registered:
        return _registered[kind]
    if kind not in _BUILTIN:
        raise ExpertUnavailable(f"unknown expert backend kind {kind!r}")
    module_name, _, attr_path = _BUILTIN[kind].partition(":")
    target: object = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        target = getattr(target, attr)
    factory: Factory = target  # type: ignore[assignment]
    _registered[kind] = factory
    return factory


def _build_remote(name: str, spec: ExpertSpec) -> Backend:
    """litellm (any provider) or the direct httpx client, as `remote_client` resolves it."""
    if remote_client(spec) == "httpx":
        from experts.openai_http import OpenAIHTTPBackend

        return OpenAIHTTPBackend.from_spec(name, spec)
    from experts.remote import RemoteBackend, import_litellm

    import_litellm()  # seconds: pay them at start-up, not inside the first request
    return RemoteBackend.from_spec(name, spec)


def remote_client(spec: ExpertSpec) -> str:
    """`client: auto` takes httpx only where litellm has nothing to add: an OpenAI-compatible
    server (`openai/<name>` at an api_base) serving a chat model litellm's table does not list.
    For a model it lists, litellm adapts the request to that model (parameter renames, the
    table's window and vision flags); the httpx path costs ~11 ms less per call
    (docs/bench/experts.md) but knows none of that."""
    if spec.client != "auto":
        return spec.client
    if spec.kind == "embedding" or not spec.api_base or not spec.model.startswith("openai/"):
        return "litellm"
    from experts.remote import litellm_lists

    return "litellm" if litellm_lists(spec.model) else "httpx"


def _build_fake(name: str, spec: ExpertSpec) -> Backend:
    from experts.fake import FakeBackend

    return FakeBackend(
        name,
        reply=spec.reply,
        delay_ms=spec.delay_ms,
        fail=spec.fail,
        context_window=spec.effective_context_window or 4096,
    )
