"""The Serve deployment per local expert: a thin shell around a Backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from ray import serve

from experts.base import (
    Completion,
    EmbeddingParams,
    Embeddings,
    GenerationParams,
    Message,
    ModelInfo,
    StreamChunk,
)
from experts.capabilities import Capabilities
from experts.spec import ExpertSpec


@serve.deployment
class ExpertDeployment:
    def __init__(self, name: str, spec: ExpertSpec, adapters: dict[str, str] | None = None) -> None:
        self.name = name
        if adapters:
            from experts.lora import build_lora_backend

            self.backend = build_lora_backend(name, spec, adapters)
            if spec.capabilities is not None:
                self.backend.capability_overrides = spec.capabilities.overrides()
        else:
            from experts.registry import build_backend

            self.backend = build_backend(name, spec)

    async def generate(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        return await self.backend.generate(messages, params)

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[StreamChunk]:
        async for chunk in self.backend.stream(messages, params):
            yield chunk

    async def embed(
        self, texts: Sequence[str], params: EmbeddingParams | None = None
    ) -> Embeddings:
        return await self.backend.embed(texts, params)

    def info(self) -> ModelInfo:
        return self.backend.info()

    def capabilities(self) -> Capabilities:
        return self.backend.capabilities()

    async def health(self) -> bool:
        return await self.backend.health()

    async def check_health(self) -> None:
        # Serve restarts a replica whose health check raises.
        if not await self.backend.health():
            raise RuntimeError(f"expert {self.name} is unhealthy")


def deployment_options(name: str, spec: ExpertSpec) -> dict[str, object]:
    """Map the YAML's replicas/resources onto Serve's deployment options."""
    actor: dict[str, object] = {"num_cpus": spec.resources.num_cpus}
    if spec.resources.num_gpus:
        actor["num_gpus"] = spec.resources.num_gpus
    if spec.resources.memory_gb:
        actor["memory"] = int(spec.resources.memory_gb * 1024**3)
    if spec.resources.custom:
        actor["resources"] = dict(spec.resources.custom)
    opts: dict[str, object] = {
        "name": f"expert-{name}",
        "max_ongoing_requests": spec.max_ongoing_requests,
        "max_queued_requests": spec.max_queued_requests,
        "ray_actor_options": actor,
        # Model loading can take a while on first start (GGUF conversion).
        "health_check_timeout_s": 60,
        "graceful_shutdown_timeout_s": 10,
    }
    r = spec.replicas
    if r.min == r.max:
        opts["num_replicas"] = r.min
    else:
        opts["autoscaling_config"] = {
            "min_replicas": r.min,
            "max_replicas": r.max,
            "initial_replicas": max(r.min, 1),
            "target_ongoing_requests": r.target_ongoing_requests,
            "upscale_delay_s": r.upscale_delay_s,
            "downscale_delay_s": r.downscale_delay_s,
        }
    return opts


def lora_groups(experts: dict[str, ExpertSpec]) -> dict[str, dict[str, str]]:
    """Local experts that are LoRA adapters on the same base share one deployment.

    Returns {first expert's name: {expert name: adapter path}}; the group's replicas and
    resources are its first expert's."""
    groups: dict[tuple[str, str | None, str, str], dict[str, str]] = {}
    for name, spec in experts.items():
        if spec.backend == "local" and spec.adapter:
            key = (spec.model, spec.gguf_file, spec.dtype, spec.device)
            groups.setdefault(key, {})[name] = spec.adapter
    return {next(iter(members)): members for members in groups.values()}
