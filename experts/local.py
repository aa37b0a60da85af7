"""Local transformers experts: a causal LM in this process, decoded with continuous batching."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from experts.base import (
    Backend,
    Completion,
    GenerationParams,
    Message,
    ModelInfo,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
)
from experts.batching import BatchEngine, DoneEvent, Event, TextEvent
from experts.capabilities import Capabilities
from experts.chat import has_chat_template, implicit_stops, render_prompt
from experts.constrained import GrammarCompiler, available
from experts.errors import (
    ContextWindowExceeded,
    ExpertError,
    ExpertUnavailable,
    InvalidGenerationRequest,
    UnsupportedCapability,
    translate_torch_error,
)
from experts.local_tools import (
    forced_call_lark,
    parse_tool_calls,
    template_supports_tools,
    template_tools,
)
from experts.needs import requirements
from experts.sampling import SamplingConfig
from experts.spec import ExpertSpec

log = logging.getLogger(__name__)

_DEFAULT_CONTEXT = 2048


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    source: str


def pick_device(device: str) -> str:
    """`auto` means the GPU when this replica was given one."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str) -> Any:
    """`auto`: half precision on GPU, float32 on CPU (CPU half-precision matmuls are slow)."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)


def load_model(
    source: str, *, gguf_file: str | None = None, dtype: str = "auto", device: str = "auto"
) -> LoadedModel:
    """from_pretrained on a hub id or local folder; GGUF goes through the cached conversion."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = source
    if gguf_file:
        from experts.gguf import materialize_gguf

        path = str(materialize_gguf(source, gguf_file))
    target = pick_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(dtype, target))
    except (OSError, ValueError) as exc:
        raise ExpertUnavailable(f"cannot load model {source!r}: {exc}") from exc
    model.to(target)
    model.eval()
    return LoadedModel(model, tokenizer, source)


def adapter_names(model: Any) -> frozenset[str]:
    """LoRA adapters loaded on a peft model (none on a plain transformers model)."""
    return frozenset(getattr(model, "peft_config", None) or ())


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    for value in (getattr(gen, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return sorted(ids)


def _text_config(model: Any) -> Any:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _context_window(model: Any, override: int | None) -> int:
    if override:
        return override
    window = getattr(_text_config(model), "max_position_embeddings", None)
    return int(window) if window else _DEFAULT_CONTEXT


def model_metadata(model: Any, source: str) -> dict[str, Any]:
    """/v1/models extras: total and active parameters per token for MoE models, and how an
    upcycled MoE was made."""
    from experts.moe import is_moe, moe_metadata
    from experts.upcycle import read_upcycle_metadata

    meta: dict[str, Any] = {}
    if is_moe(model.config):
        meta.update(moe_metadata(model))
        upcycled = read_upcycle_metadata(source) if Path(source).is_dir() else None
        if upcycled:
            meta["upcycled_from"] = upcycled.get("base")
    return meta


class LocalBackend(Backend):
    """A transformers causal LM; concurrent requests share forward passes (see BatchEngine)."""

    def __init__(
        self,
        name: str,
        model: Any,
        tokenizer: Any,
        *,
        context_window: int | None = None,
        max_batch_size: int = 8,
        batch_wait_ms: float = 5.0,
        model_label: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self._context_window = _context_window(model, context_window)
        self._label = model_label or getattr(model.config, "_name_or_path", "") or name
        self._metadata = dict(metadata or {})
        self._stops = implicit_stops(tokenizer)
        self._grammars = GrammarCompiler(tokenizer, int(_text_config(model).vocab_size))
        self.engine = BatchEngine(
            model,
            tokenizer,
            max_batch_size=max_batch_size,
            batch_wait_ms=batch_wait_ms,
            eos_token_ids=_eos_ids(model, tokenizer),
        )

    @classmethod
    def from_spec(cls, name: str, spec: ExpertSpec) -> LocalBackend:
        """Load the model the spec names (blocking: call it from the replica's constructor)."""
        from experts.builtin import resolve

        label = spec.model + (f"#{spec.gguf_file}" if spec.gguf_file else "")
        concrete = resolve(spec)  # `builtin:<name>` -> a model shipped by a PyPI package
        loaded = load_model(
            concrete.model, gguf_file=concrete.gguf_file, dtype=spec.dtype, device=spec.device
        )
        meta = model_metadata(loaded.model, concrete.model)
        return cls.from_loaded(name, loaded, spec, model_label=label, metadata=meta)

    @classmethod
    def from_loaded(
        cls,
        name: str,
        loaded: LoadedModel,
        spec: ExpertSpec,
        *,
        model_label: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> LocalBackend:
        """Wrap an already loaded model: the extension point for LoRA / MoE loaders, which
        build `loaded` themselves (a peft model with adapters, an upcycled MoE) and add
        /v1/models `metadata` (e.g. total and active parameters)."""
        return cls(
            name,
            loaded.model,
            loaded.tokenizer,
            context_window=spec.effective_context_window,
            max_batch_size=spec.max_batch_size,
            batch_wait_ms=spec.batch_wait_ms,
            model_label=model_label or loaded.source,
            metadata=metadata,
        )

    # -- Backend ------------------------------------------------------------------------------

    def info(self) -> ModelInfo:
        params = sum(p.numel() for p in self.model.parameters())
        meta = {
            "parameters": params,
            "device": str(next(self.model.parameters()).device),
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "chat_template": "model" if has_chat_template(self.tokenizer) else "chatml-fallback",
            "max_batch_size": self.engine.max_batch_size,
            **self._metadata,
        }
        return ModelInfo("local", self._label, self._context_window, meta, self.capabilities())

    def derived_capabilities(self) -> Capabilities:
        """JSON modes through constrained decoding; tool calls where the chat template takes
        tools and writes Hermes-style calls (experts/local_tools.py); no logprobs, no images."""
        constrained = available()
        return Capabilities(
            tools=template_supports_tools(self.tokenizer),
            json_object=constrained,
            json_schema=constrained,
            context_window=self._context_window,
            source="local: constrained decoding (llguidance)" if constrained else "local",
        )

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return len(self._encode(messages))

    async def generate(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        parts: list[str] = []
        async for chunk in self._stream_text(messages, params):
            parts.append(chunk.text)
            if chunk.finish_reason is not None:
                text, calls = "".join(parts), cast(tuple[ToolCall, ...], ())
                if params.wants_tools:
                    text, calls = parse_tool_calls(text)
                return Completion(
                    text,
                    chunk.prompt_tokens or 0,
                    chunk.completion_tokens or 0,
                    "tool_calls" if calls else chunk.finish_reason,
                    tool_calls=calls,
                )
        raise ExpertError("local model ended without a final chunk")

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[StreamChunk]:
        if not params.wants_tools:
            async for chunk in self._stream_text(messages, params):
                yield chunk
            return
        # A tool call is only known once its block is complete: answer whole, then stream it
        # in OpenAI's shape (text, one delta per call, the final chunk).
        done = await self.generate(messages, params)
        if done.text:
            yield StreamChunk(done.text)
        for index, call in enumerate(done.tool_calls):
            yield StreamChunk(
                "", tool_calls=(ToolCallDelta(index, call.id, call.name, call.arguments),)
            )
        yield StreamChunk("", done.finish_reason, done.prompt_tokens, done.completion_tokens)

    async def _stream_text(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[StreamChunk]:
        missing = self.capabilities().missing(requirements(messages, params))
        if missing:
            raise UnsupportedCapability(
                f"expert '{self.name}' cannot do: {', '.join(missing)}", param="messages"
            )
        prompt_ids = self._encode(messages, template_tools(params))
        config = self._sampling(len(prompt_ids), params)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def sink(event: Event) -> None:  # runs on the engine's thread
            loop.call_soon_threadsafe(events.put_nowait, event)

        request_id = self.engine.submit(prompt_ids, config, sink)
        finished = False
        try:
            while True:
                event = await events.get()
                if isinstance(event, TextEvent):
                    yield StreamChunk(event.text)
                elif isinstance(event, DoneEvent):
                    finished = True
                    yield StreamChunk(
                        "", event.finish_reason, event.prompt_tokens, event.completion_tokens
                    )
                    return
                else:
                    finished = True
                    raise event.error
        finally:
            if not finished:  # the client went away: free the batch slot
                self.engine.cancel(request_id)

    async def health(self) -> bool:
        return self.engine.alive

    async def aclose(self) -> None:
        await asyncio.to_thread(self.engine.close)

    # -- helpers ------------------------------------------------------------------------------

    def _encode(
        self, messages: Sequence[Message], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        if not messages:
            raise InvalidGenerationRequest("messages must not be empty", param="messages")
        try:
            text = render_prompt(self.tokenizer, messages, tools)
            # The template already holds the special tokens (BOS and friends).
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        except ExpertError:
            raise
        except Exception as exc:  # jinja template errors, e.g. a role the template rejects
            raise InvalidGenerationRequest(
                f"cannot format the prompt: {exc}", param="messages"
            ) from exc
        return list(ids)

    def _sampling(self, prompt_len: int, params: GenerationParams) -> SamplingConfig:
        room = self._context_window - prompt_len
        if room <= 0:
            raise ContextWindowExceeded(
                f"the prompt takes {prompt_len} tokens; expert '{self.name}' has a context window "
                f"of {self._context_window}",
                param="messages",
            )
        if params.adapter and params.adapter not in adapter_names(self.model):
            # A plain model would silently ignore the adapter and answer as the base model.
            raise InvalidGenerationRequest(
                f"expert '{self.name}' has no adapter {params.adapter!r}", param="model"
            )
        if params.max_tokens < 1:
            raise InvalidGenerationRequest("max_tokens must be at least 1", param="max_tokens")
        return SamplingConfig(
            max_new_tokens=min(params.max_tokens, room),
            temperature=params.temperature,
            top_p=params.top_p,
            stop=tuple(s for s in (*params.stop, *self._stops) if s),
            seed=params.seed,
            adapter=params.adapter,
            grammar=self._grammar(params),
        )

    def _grammar(self, params: GenerationParams) -> Any:
        """A forced tool call, else the response format's grammar, else none."""
        lark = forced_call_lark(params)
        if lark is not None:
            return self._grammars.for_lark(lark)
        if params.response_format is not None:
            return self._grammars.for_format(params.response_format)
        return None


__all__ = [
    "LoadedModel",
    "LocalBackend",
    "load_model",
    "pick_device",
    "pick_dtype",
    "translate_torch_error",
]
