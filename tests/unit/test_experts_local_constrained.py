"""JSON mode and JSON schemas on a local model through constrained decoding: a random tiny
Llama (which left alone writes noise) must answer valid JSON, per row of a shared batch."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import jsonschema
import pytest

from experts.base import GenerationParams, Message, ResponseFormat, Tool
from experts.errors import InvalidGenerationRequest, UnsupportedCapability
from tests.unit.test_experts_local import build_tiny_llama, make_backend

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Oslo"]},
        "rain": {"type": "boolean"},
    },
    "required": ["city", "rain"],
    "additionalProperties": False,
}
USER = [Message("user", "Weather in Paris as JSON?")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-constrained"))


def params(fmt: ResponseFormat | None, seed: int = 0) -> GenerationParams:
    return GenerationParams(max_tokens=120, temperature=1.0, seed=seed, response_format=fmt)


async def test_json_schema_rows_and_a_free_row_share_one_batch(model_dir: Path) -> None:
    backend = make_backend(model_dir, batch_wait_ms=200, max_batch_size=8)
    fmt = ResponseFormat("json_schema", "weather", SCHEMA, strict=True)
    got = await asyncio.gather(
        *(backend.generate(USER, params(fmt, seed)) for seed in range(3)),
        backend.generate(USER, params(None, 7)),
    )
    for answer in got[:3]:
        assert answer.finish_reason == "stop", answer.text
        jsonschema.validate(json.loads(answer.text), SCHEMA)
    free = got[3].text
    with pytest.raises(ValueError):
        json.loads(free)  # the same random model, unconstrained: not JSON
    prefill = backend.engine.steps[0]
    assert prefill.kind == "prefill" and len(prefill.request_ids) == 4
    await backend.aclose()


async def test_json_object_mode_streams_a_json_object(model_dir: Path) -> None:
    backend = make_backend(model_dir)
    pieces = [
        c
        async for c in backend.stream(
            USER,
            GenerationParams(
                max_tokens=200, temperature=0.0, response_format=ResponseFormat("json_object")
            ),
        )
    ]
    text = "".join(c.text for c in pieces)
    if pieces[-1].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
    else:  # cut by max_tokens, as OpenAI's JSON mode is: still a JSON object's beginning
        assert text.startswith("{")
    await backend.aclose()


async def test_capabilities_say_what_works(model_dir: Path) -> None:
    backend = make_backend(model_dir)
    caps = backend.info().capabilities
    assert caps is not None
    assert (caps.json_object, caps.json_schema, caps.tools, caps.logprobs, caps.vision) == (
        True,
        True,
        False,
        False,
        False,
    )
    with pytest.raises(UnsupportedCapability, match="tools"):
        await backend.generate(USER, GenerationParams(tools=(Tool("f"),)))
    with pytest.raises(InvalidGenerationRequest):
        bogus = ResponseFormat("json_schema", "x", {"type": "bogus"})
        await backend.generate(USER, GenerationParams(response_format=bogus))
    await backend.aclose()
