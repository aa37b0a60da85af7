"""How the ingress reaches experts and the classifier: in-process objects or Serve handles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

from classifiers.base import Classification, Classifier
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


class InProcessExpert:
    """A backend living in the ingress process (remote and fake experts: no hop needed)."""

    def __init__(self, backend: Backend, adapter: str | None = None) -> None:
        self.backend = backend
        self.adapter = adapter

    def _params(self, params: GenerationParams) -> GenerationParams:
        return replace(params, adapter=self.adapter) if self.adapter else params

    async def generate(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        return await self.backend.generate(messages, self._params(params))

    def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[StreamChunk]:
        return self.backend.stream(messages, self._params(params))

    async def embed(self, texts: Sequence[str], params: EmbeddingParams) -> Embeddings:
        return await self.backend.embed(texts, params)

    async def describe(self) -> ModelInfo:
        return self.backend.info()

    async def health(self) -> bool:
        return await self.backend.health()


class HandleExpert:
    """An expert in its own Serve deployment (local models), reached through its handle.

    `adapter` names the LoRA adapter to run when several experts share one base deployment."""

    def __init__(self, handle: Any, adapter: str | None = None) -> None:
        self.handle = handle
        self.adapter = adapter
        self._stream_handle = handle.options(stream=True)

    def _params(self, params: GenerationParams) -> GenerationParams:
        return replace(params, adapter=self.adapter) if self.adapter else params

    async def generate(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        result: Completion = await self.handle.generate.remote(list(messages), self._params(params))
        return result

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[StreamChunk]:
        gen = self._stream_handle.stream.remote(list(messages), self._params(params))
        try:
            async for chunk in gen:
                yield chunk
        finally:
            # Stop generation in the replica when the client goes away.
            gen.cancel()

    async def embed(self, texts: Sequence[str], params: EmbeddingParams) -> Embeddings:
        result: Embeddings = await self.handle.embed.remote(list(texts), params)
        return result

    async def describe(self) -> ModelInfo:
        info: ModelInfo = await self.handle.info.remote()
        return info

    async def health(self) -> bool:
        ok: bool = await self.handle.health.remote()
        return ok


class InProcessClassifier:
    """Classifier in the ingress: saves a hop. Runs in a thread so the event loop stays free."""

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier

    async def classify(self, text: str) -> Classification:
        result = await asyncio.to_thread(self.classifier.classify, [text])
        return result[0]


class HandleClassifier:
    """Classifier in its own batched deployment."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def classify(self, text: str) -> Classification:
        result: Classification = await self.handle.classify.remote(text)
        return result
