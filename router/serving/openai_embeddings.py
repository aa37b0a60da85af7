"""POST /v1/embeddings: the request (validated) and the answer in OpenAI's shape."""

from __future__ import annotations

import base64
import struct
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from experts.base import EmbeddingParams, Embeddings
from router.errors import InvalidRequest

MAX_INPUTS = 2048  # OpenAI's limit per request
NEEDS = frozenset({"embeddings"})


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    input: str | list[str] | list[int] | list[list[int]] = Field(
        ..., description="Text or a list of texts (token-id arrays are refused: send text)."
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, le=65_536)
    user: str | None = Field(None, max_length=256)

    def texts(self) -> list[str]:
        """The inputs as texts; raises InvalidRequest for what no expert may be sent."""
        items: list[Any] = [self.input] if isinstance(self.input, str) else list(self.input)
        if not items:
            raise InvalidRequest("input must not be empty", param="input")
        if len(items) > MAX_INPUTS:
            raise InvalidRequest(f"at most {MAX_INPUTS} inputs per request", param="input")
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise InvalidRequest(
                    "token-id input is not supported (experts tokenize differently): send text",
                    param="input",
                )
            if not item.strip():
                raise InvalidRequest(f"input[{i}] is empty", param="input")
        return items

    def routing_text(self) -> str:
        return ""  # embeddings are not classified: any embedding expert serves them

    def needs(self) -> frozenset[str]:
        return NEEDS

    def params(self) -> EmbeddingParams:
        return EmbeddingParams(dimensions=self.dimensions, user=self.user)


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "float":
        return vector
    # OpenAI's base64: little-endian float32, which the openai client asks for by default.
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def embeddings_body(expert: str, emb: Embeddings, encoding_format: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(v, encoding_format)}
            for i, v in enumerate(emb.vectors)
        ],
        "model": expert,
        "usage": {"prompt_tokens": emb.prompt_tokens, "total_tokens": emb.prompt_tokens},
    }
