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


class PriceSpec(_Strict):
    """Either per token (remote models) or per replica-hour (self-hosted), in USD."""

    input_per_1m: float = Field(0.0, ge=0)
    output_per_1m: float = Field(0.0, ge=0)
    per_replica_hour: float = Field(0.0, ge=0)


class ExpertSpec(_Strict):
    backend: Literal["local", "remote", "fake"]
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
    client: Literal["litellm", "httpx"] = Field(
        "litellm",
        description="remote: litellm (any provider) or httpx (direct, OpenAI-compatible api_base).",
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
        return self

    @property
    def runs_in_own_deployment(self) -> bool:
        """Local models hold weights and scale; remote and fake experts are called in-process."""
        return self.backend == "local"
