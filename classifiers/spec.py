"""The classifier's part of the policy YAML."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ClassifierSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal[
        "keywords", "examples", "tfidf", "embedding", "finetuned", "ensemble", "artifact"
    ] = "examples"
    path: str | None = Field(
        None, description="Trained artifact directory (from `slm-router classifier train`)."
    )
    encoder: str | None = Field(
        None, description="Sentence encoder for `examples`/`embedding` (default all-MiniLM-L6-v2)."
    )
    escalation_path: str | None = Field(
        None, description="Escalation artifact (`classifier train --task escalation`)."
    )
    oos_threshold: float | None = Field(
        None, ge=0, le=1, description="Override the artifact's calibrated out-of-scope threshold."
    )
    placement: Literal["ingress", "deployment"] = Field(
        "ingress",
        description="Run in-process in the ingress (saves a hop) or as its own batched deployment.",
    )
    replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.5, ge=0)
    max_batch_size: int = Field(16, ge=1)
    batch_wait_ms: float = Field(2.0, ge=0)
    temperature: float = Field(
        0.05, gt=0, description="`examples`: softmax temperature over cosine similarities."
    )
    max_length: int = Field(64, ge=8, le=512, description="Encoder truncation, in word pieces.")
    backend: Literal["onnx", "torch", "static"] = Field(
        "onnx",
        description="`examples`: how the encoder runs. onnx: ONNX Runtime on a graph exported "
        "once and cached (~1.6-2 ms per unseen prompt here, int8); torch: transformers in-process "
        "(~10-20 ms); static: model2vec embeddings distilled locally (fastest, least accurate).",
    )
    quantize: bool = Field(
        True,
        description="`examples`: int8 weights (dynamic quantisation) for the onnx/torch backends.",
    )
    torch_threads: int | None = Field(
        1,
        ge=1,
        description="Threads for the encoder (onnx: its session; torch: torch.set_num_threads, "
        "process-wide); 1 gives the steadiest single-query latency on small shared CPUs. null "
        "leaves the library's default.",
    )
