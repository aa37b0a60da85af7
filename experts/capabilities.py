"""What an expert can do, so the router can send a request only where it will be honoured.

Each backend derives its own (`Backend.derived_capabilities()`: litellm's model table for remote
models, the chat template and the constrained decoder for local ones); the YAML's
`capabilities:` block overrides any field (`Backend.capabilities()` applies it). The names below
are the vocabulary the router speaks: `experts.needs.requirements(messages, params)` returns the
subset a chat request needs, and `Capabilities.missing(needs)` the ones an expert lacks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

# A chat request needs "chat"; an embeddings request needs "embeddings".
FEATURES = ("chat", "tools", "json_object", "json_schema", "logprobs", "vision", "embeddings")


@dataclass(frozen=True)
class Capabilities:
    chat: bool = True
    tools: bool = False  # tools / tool_choice, tool_calls back; tool turns in the history
    json_object: bool = False  # response_format {"type": "json_object"}
    json_schema: bool = False  # response_format {"type": "json_schema", ...}
    logprobs: bool = False  # logprobs / top_logprobs
    vision: bool = False  # image_url content parts
    embeddings: bool = False  # Backend.embed
    context_window: int | None = None  # tokens; None: unknown (the upstream enforces it)
    # Where the values come from, for /v1/models and routing reasons: "litellm model table",
    # "chat template", "yaml", ...
    source: str = "default"

    def supports(self, feature: str) -> bool:
        if feature not in FEATURES:
            raise ValueError(f"unknown capability {feature!r} (known: {', '.join(FEATURES)})")
        return bool(getattr(self, feature))

    def missing(self, needs: Iterable[str]) -> tuple[str, ...]:
        """The needed features this expert lacks, in FEATURES order (empty: it can serve)."""
        wanted = set(needs)
        return tuple(f for f in FEATURES if f in wanted and not self.supports(f))

    def with_overrides(self, overrides: Mapping[str, Any]) -> Capabilities:
        """These capabilities with the given fields replaced (None values are ignored)."""
        known = {f.name for f in fields(self)} - {"source"}
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(given) - known
        if unknown:
            raise ValueError(f"unknown capability fields: {sorted(unknown)}")
        if not given:
            return self
        return replace(self, **given, source=f"{self.source} + yaml({', '.join(sorted(given))})")

    def names(self) -> frozenset[str]:
        """The features this expert has, as the capability names policies.capable routes on."""
        return frozenset(f for f in FEATURES if self.supports(f))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Embedding-only experts: no chat at all.
EMBEDDING_ONLY = Capabilities(chat=False, embeddings=True)
