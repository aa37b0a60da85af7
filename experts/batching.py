"""Continuous batching for one local model: every active sequence advances in one forward pass.

One worker thread owns the model. Requests join between decode steps (their prompts are
prefilled together, left-padded, then their KV cache is spliced into the running batch) and
leave as soon as they finish, so a long answer never holds up a short one. Torch and
transformers are imported lazily: this module is imported by the gateway's hot path.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from experts.detok import IncrementalDetokenizer
from experts.errors import ExpertError, ExpertOverloaded, translate_torch_error
from experts.kvcache import (
    concat_caches,
    device_of,
    left_pad,
    pad_id,
    positions,
    slice_cache,
)
from experts.sampling import SamplingConfig, find_stop, generator, sample_row


@dataclass(frozen=True)
class TextEvent:
    text: str


@dataclass(frozen=True)
class DoneEvent:
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class ErrorEvent:
    error: ExpertError


Event = TextEvent | DoneEvent | ErrorEvent
Sink = Callable[[Event], None]


@dataclass(frozen=True)
class StepRecord:
    """One forward pass: 'prefill' or 'decode', and which requests it carried."""

    kind: str
    request_ids: tuple[int, ...]


@dataclass
class _Request:
    id: int
    prompt_ids: list[int]
    config: SamplingConfig
    sink: Sink
    detok: IncrementalDetokenizer
    generator: Any = None
    matcher: Any = None  # experts.constrained.Matcher when the request has a grammar
    generated: int = 0
    text: str = ""
    sent: int = 0
    cancelled: bool = False
    done: bool = False

    def emit(self, event: Event) -> None:
        if not self.cancelled:
            self.sink(event)


@dataclass
class _Batch:
    """The running batch: one KV cache row per request, left-padded to a common length."""

    requests: list[_Request] = field(default_factory=list)
    cache: Any = None  # transformers DynamicCache
    mask: Any = None  # [B, L] attention mask over the cache
    next_ids: Any = None  # [B] tokens sampled but not yet fed to the model


class BatchEngine:
    """Owns a causal LM and decodes all of its active requests together."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int = 8,
        batch_wait_ms: float = 5.0,
        eos_token_ids: Sequence[int] = (),
        record_steps: int = 10_000,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000
        self.eos_token_ids = frozenset(eos_token_ids)
        self.pad_token_id = pad_id(tokenizer, eos_token_ids)
        self._has_adapters = bool(getattr(model, "peft_config", None))
        # Instrumentation read by tests and benchmarks: one record per forward pass.
        self.steps: deque[StepRecord] = deque(maxlen=record_steps)
        self._ids = itertools.count(1)
        self._inbox: queue.Queue[_Request | None] = queue.Queue()
        self._batch = _Batch()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._cancelled_pending: set[int] = set()

    # -- public, called from any thread -------------------------------------------------------

    def submit(self, prompt_ids: list[int], config: SamplingConfig, sink: Sink) -> int:
        """Queue a request; events arrive on `sink` from the worker thread. Returns its id."""
        if self._closed:
            raise ExpertOverloaded("the local model is shutting down")
        req = _Request(
            next(self._ids),
            prompt_ids,
            config,
            sink,
            IncrementalDetokenizer(self.tokenizer, prompt_ids),
            matcher=config.grammar.matcher() if config.grammar is not None else None,
        )
        self._ensure_thread()
        self._inbox.put(req)
        return req.id

    def cancel(self, request_id: int) -> None:
        """Stop generating for a request whose client went away (takes effect at the next step)."""
        for req in list(self._batch.requests):
            if req.id == request_id:
                req.cancelled = True
        self._cancelled_pending.add(request_id)

    def close(self) -> None:
        self._closed = True
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def active(self) -> int:
        return len(self._batch.requests)

    @property
    def alive(self) -> bool:
        """False once the worker thread has stopped (closed, or died)."""
        return not self._closed and (self._thread is None or self._thread.is_alive())

    # -- worker thread ------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="batch-engine", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                new = self._take_new(block=not self._batch.requests)
                if new is None:
                    self._shutdown()
                    return
                # One bad step must not kill the replica's engine: fail the requests it carried.
                if new:
                    try:
                        self._admit(new)
                    except Exception as exc:
                        self._fail(translate_torch_error(exc), [r for r in new if not r.done])
                if self._batch.requests:
                    try:
                        self._decode_step()
                    except Exception as exc:
                        self._fail_all(translate_torch_error(exc), [])

    def _take_new(self, *, block: bool) -> list[_Request] | None:
        """Requests to admit now; None once closed. Waits briefly to gather a first batch."""
        room = self.max_batch_size - len(self._batch.requests)
        if room <= 0:
            return []
        taken: list[_Request] = []
        try:
            first = self._inbox.get(block=block)
        except queue.Empty:
            return []
        if first is None:
            return None
        taken.append(first)
        # From idle, wait a moment so a burst is prefilled as one batch; while decoding, don't.
        deadline = time.monotonic() + (self.batch_wait_s if block else 0.0)
        while len(taken) < room:
            wait = deadline - time.monotonic()
            try:
                item = self._inbox.get(timeout=wait) if wait > 0 else self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._inbox.put(None)
                break
            taken.append(item)
        gone = {r.id for r in taken} & self._cancelled_pending
        self._cancelled_pending -= gone
        return [r for r in taken if r.id not in gone]

    def _admit(self, new: list[_Request]) -> None:
        """Prefill the new prompts together and splice them into the running batch."""
        import torch
        from transformers import DynamicCache

        device = device_of(self.model)
        width = max(len(r.prompt_ids) for r in new)
        ids = torch.full((len(new), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(new), width), dtype=torch.long)
        for row, req in enumerate(new):
            ids[row, width - len(req.prompt_ids) :] = torch.tensor(req.prompt_ids)
            mask[row, width - len(req.prompt_ids) :] = 1
            req.generator = generator(req.config.seed, device)
        ids, mask = ids.to(device), mask.to(device)
        cache = DynamicCache()
        self.steps.append(StepRecord("prefill", tuple(r.id for r in new)))
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions(mask),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            **self._adapter_kwargs(new),
        )
        next_ids = self._sample(out.logits[:, -1, :], new)
        self._advance_all(new, next_ids)
        self._merge(new, out.past_key_values, mask, next_ids)
        self._prune()

    def _decode_step(self) -> None:
        import torch

        b = self._batch
        step_mask = torch.cat([b.mask, torch.ones_like(b.mask[:, :1])], dim=1)
        positions = b.mask.sum(dim=1, keepdim=True)
        self.steps.append(StepRecord("decode", tuple(r.id for r in b.requests)))
        out = self.model(
            input_ids=b.next_ids.unsqueeze(1),
            attention_mask=step_mask,
            position_ids=positions,
            past_key_values=b.cache,
            use_cache=True,
            **self._adapter_kwargs(b.requests),
        )
        b.cache, b.mask = out.past_key_values, step_mask
        b.next_ids = self._sample(out.logits[:, -1, :], b.requests)
        self._advance_all(b.requests, b.next_ids)
        self._prune()

    def _adapter_kwargs(self, reqs: Sequence[_Request]) -> dict[str, Any]:
        # peft runs a mixed batch when given one adapter name per row ("__base__" = no adapter).
        # Always name them on a peft model: without names it applies its *active* adapter.
        if not (self._has_adapters or any(r.config.adapter for r in reqs)):
            return {}
        return {"adapter_names": [r.config.adapter or "__base__" for r in reqs]}

    def _sample(self, logits: Any, reqs: Sequence[_Request]) -> Any:
        import torch

        picks = [self._pick(logits[i], r) for i, r in enumerate(reqs)]
        return torch.stack(picks)

    @staticmethod
    def _pick(row: Any, req: _Request) -> Any:
        if req.matcher is not None and not req.done:
            req.matcher.mask(row)  # this row only: free rows in the batch are untouched
        return sample_row(row, req.config, req.generator)

    def _advance_all(self, reqs: Sequence[_Request], next_ids: Any) -> None:
        """Turn freshly sampled tokens into text events."""
        for req, token in zip(reqs, next_ids.tolist(), strict=True):
            if not req.cancelled:
                self._advance(req, int(token))

    def _prune(self) -> None:
        keep = [i for i, r in enumerate(self._batch.requests) if not (r.done or r.cancelled)]
        if len(keep) < len(self._batch.requests):
            self._drop_rows(keep)

    def _advance(self, req: _Request, token: int) -> None:
        req.generated += 1
        if req.matcher is not None:
            try:
                req.matcher.advance(token)
            except ExpertError as exc:  # this request only; _prune drops its row
                req.done = True
                req.emit(ErrorEvent(exc))
                return
        if token in self.eos_token_ids:
            self._finish(req, "stop", len(req.text))
            return
        req.text += req.detok.push(token)
        cut = find_stop(req.text, req.config.stop)
        if cut is not None:
            self._finish(req, "stop", cut)
        elif req.generated >= req.config.max_new_tokens:
            self._finish(req, "length", len(req.text))
        else:
            # Hold back a tail that could be the start of a stop string.
            hold = max((len(s) for s in req.config.stop), default=1) - 1
            self._flush(req, len(req.text) - hold)

    def _flush(self, req: _Request, upto: int) -> None:
        if upto > req.sent:
            req.emit(TextEvent(req.text[req.sent : upto]))
            req.sent = upto

    def _finish(self, req: _Request, reason: str, upto: int) -> None:
        self._flush(req, upto)
        req.done = True
        req.emit(DoneEvent(reason, len(req.prompt_ids), req.generated))

    def _merge(self, new: list[_Request], cache: Any, mask: Any, next_ids: Any) -> None:
        import torch

        b = self._batch
        if not b.requests:
            b.requests, b.cache, b.mask, b.next_ids = list(new), cache, mask, next_ids
            return
        width = max(b.mask.shape[1], mask.shape[1])
        b.cache = concat_caches(b.cache, b.mask.shape[1], cache, mask.shape[1], width)
        b.mask = torch.cat([left_pad(b.mask, width), left_pad(mask, width)], dim=0)
        b.next_ids = torch.cat([b.next_ids, next_ids])
        b.requests = b.requests + list(new)

    def _drop_rows(self, keep: list[int]) -> None:
        import torch

        b = self._batch
        self._cancelled_pending.difference_update(r.id for r in b.requests)
        if not keep:
            self._batch = _Batch()
            return
        index = torch.tensor(keep, device=b.mask.device)
        b.requests = [b.requests[i] for i in keep]
        b.mask, b.next_ids = b.mask[index], b.next_ids[index]
        b.cache.batch_select_indices(index)
        # Columns that are padding for every remaining row are dead weight in each step.
        live = b.mask.any(dim=0).nonzero()
        start = int(live[0]) if len(live) else 0
        if start > 0:
            b.mask = b.mask[:, start:]
            b.cache = slice_cache(b.cache, start)

    def _fail(self, error: ExpertError, reqs: Sequence[_Request]) -> None:
        for req in reqs:
            if not req.done:
                req.done = True
                req.emit(ErrorEvent(error))
        if any(r in self._batch.requests for r in reqs):
            self._prune()

    def _fail_all(self, error: ExpertError, extra: Sequence[_Request]) -> None:
        self._fail(error, [*self._batch.requests, *extra])
        self._batch = _Batch()

    def _shutdown(self) -> None:
        error = ExpertOverloaded("the local model is shutting down")
        pending: list[_Request] = []
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                pending.append(item)
        self._fail_all(error, pending)
