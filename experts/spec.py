"""The experts' part of the policy YAML: one ExpertSpec per expert name."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReplicaSpec(_Strict):
    """Per-expert scaling, mapped onto Ray Serve's autoscaling_config."""

    min: int = Field(
        1, ge=0, description="Minimum replicas (0 allowed: first request cold-starts)."
    )
    max: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(5.0, ge=0)
    downscale_delay_s: float = Field(30.0, ge=0)

    @model_validator(mode="after")
    def _min_le_max(self) -> ReplicaSpec:
        if self.min > self.max:
            raise ValueError(f"replicas.min ({self.min}) is greater than replicas.max ({self.max})")
        return self


class ResourceSpec(_Strict):
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0, description="Fractions share one GPU between replicas.")
    memory_gb: float | None = Field(None, gt=0)
    custom: dict[str, float] = Field(
        default_factory=dict,
        description="Ray custom resources, e.g. {gpu_node: 0.01}: pins replicas to nodes started "
        "with them (docs/DEPLOY.md).",
    )


class PriceSpec(_Strict):
    """Either per token (remote models) or per replica-hour (self-hosted), in USD."""

    input_per_1m: float = Field(0.0, ge=0)
    output_per_1m: float = Field(0.0, ge=0)
    per_replica_hour: float = Field(0.0, ge=0)


class CapabilitySpec(_Strict):
    """`capabilities:` overrides what the backend derives (experts/capabilities.py); every field
    is optional and an absent one keeps the derived value."""

    chat: bool | None = None
    tools: bool | None = None
    json_object: bool | None = None
    json_schema: bool | None = None
    logprobs: bool | None = None
    vision: bool | None = None
    embeddings: bool | None = None
    context_window: int | None = Field(None, gt=0)

    def overrides(self) -> dict[str, bool | int]:
        """The fields the YAML set, for Capabilities.with_overrides."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ExpertSpec(_Strict):
    backend: Literal["local", "remote", "fake"]
    kind: Literal["chat", "embedding"] = Field(
        "chat",
        description="chat (generate/stream) or embedding (embed: /v1/embeddings); an embedding "
        "expert is `backend: local` with a sentence-embedding model (builtin:all-minilm-l6-v2) "
        "or `backend: remote` with any embedding model litellm reaches.",
    )
    model: str = Field(
        "",
        description="Hub id or local path (local), litellm model string (remote), label (fake).",
    )
    description: str = ""
    # local
    gguf_file: str | None = None
    adapter: str | None = Field(None, description="LoRA adapter dir served on the base `model`.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_batch_size: int = Field(8, ge=1)
    batch_wait_ms: float = Field(5.0, ge=0)
    # remote
    api_base: str | None = None
    api_key_env: str | None = Field(None, description="Name of the env var holding the key.")
    retries: int = Field(0, ge=0, le=5)
    client: Literal["auto", "litellm", "httpx"] = Field(
        "auto",
        description="remote: litellm (any provider), httpx (direct, OpenAI-compatible api_base), "
        "or auto: httpx for an `openai/<name>` chat model at an api_base that litellm's model "
        "table does not list (a self-hosted server, where litellm adds latency and nothing "
        "else), litellm otherwise.",
    )
    # fake
    reply: str | None = Field(None, description="fake: fixed reply (default echoes the prompt).")
    delay_ms: float = Field(0.0, ge=0)
    fail: Literal["never", "always", "after_first_token"] = "never"
    # common
    context_window: int | None = Field(None, gt=0)
    max_tokens_default: int = Field(256, gt=0)
    timeout_s: float = Field(60.0, gt=0)
    replicas: ReplicaSpec = ReplicaSpec()
    resources: ResourceSpec = ResourceSpec()
    max_ongoing_requests: int = Field(8, ge=1)
    max_queued_requests: int = Field(
        -1,
        ge=-1,
        description="Requests queued per deployment beyond max_ongoing before Serve refuses "
        "(then the next expert, or 429 with Retry-After); -1 = unbounded.",
    )
    price: PriceSpec = PriceSpec()
    slo_p95_ms: float | None = Field(None, gt=0)
    capabilities: CapabilitySpec | None = Field(
        None, description="Override derived capabilities (tools, json_schema, vision, ...)."
    )

    @model_validator(mode="after")
    def _backend_fields(self) -> ExpertSpec:
        if self.backend in ("local", "remote") and not self.model:
            raise ValueError(f"backend '{self.backend}' needs `model`")
        if self.backend != "remote" and (self.api_base or self.api_key_env):
            raise ValueError("api_base / api_key_env only apply to backend 'remote'")
        if self.client == "httpx" and not (self.backend == "remote" and self.api_base):
            raise ValueError(
                "client 'httpx' needs backend 'remote' and an OpenAI-compatible api_base"
            )
        if self.kind == "embedding" and self.client == "httpx":
            raise ValueError("embedding experts use the litellm client (client: litellm)")
        window = self.capabilities.context_window if self.capabilities else None
        if window and self.context_window and window != self.context_window:
            raise ValueError(
                f"context_window ({self.context_window}) and capabilities.context_window "
                f"({window}) disagree: set one"
            )
        return self

    @property
    def effective_context_window(self) -> int | None:
        """`context_window`, or the same field of the `capabilities:` block."""
        window = self.capabilities.context_window if self.capabilities else None
        return self.context_window or window

    @property
    def runs_in_own_deployment(self) -> bool:
        """Local models hold weights and scale; remote and fake experts are called in-process."""
        return self.backend == "local"
