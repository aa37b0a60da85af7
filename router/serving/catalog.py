"""What each expert is and can do, asked once: ModelInfo for /v1/models, capabilities for routing.

Backends derive their capabilities (litellm's model table, a chat template, the constrained
decoder) and apply the YAML's `capabilities:` overrides; the answer is cached per expert. An
expert that has not answered yet (a local model still loading) is routed on what its spec says
(chat or embedding, plus the YAML overrides) and asked again a few seconds later, so a slow
start never holds a request for long and never makes a capability up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol

from experts.base import ModelInfo
from experts.capabilities import Capabilities
from experts.spec import ExpertSpec

ASK_TIMEOUT_S = 10.0  # /v1/models waits this long for an expert's description
ROUTE_TIMEOUT_S = 2.0  # a request waits at most this long for an unknown expert's
RETRY_AFTER_S = 5.0


class Describable(Protocol):
    async def describe(self) -> ModelInfo: ...


def declared(spec: ExpertSpec) -> Capabilities:
    """What the spec alone says: its kind, then the YAML overrides."""
    kind = Capabilities(chat=spec.kind == "chat", embeddings=spec.kind == "embedding")
    overrides = spec.capabilities.overrides() if spec.capabilities is not None else {}
    return kind.with_overrides(overrides)


class Catalog:
    def __init__(self, specs: Mapping[str, ExpertSpec], experts: Mapping[str, Describable]):
        self.specs = specs
        self.experts = experts
        self._infos: dict[str, ModelInfo] = {}
        self._failed_at: dict[str, float] = {}
        self._asking: dict[str, asyncio.Task[ModelInfo]] = {}
        self._features: Mapping[str, frozenset[str]] | None = None

    async def info(self, name: str, timeout: float = ASK_TIMEOUT_S) -> ModelInfo | None:
        """The expert's ModelInfo, or None while it does not answer."""
        if name in self._infos:
            return self._infos[name]
        failed = self._failed_at.get(name)
        if failed is not None and time.monotonic() - failed < RETRY_AFTER_S:
            return None
        try:
            async with asyncio.timeout(timeout):  # not wait_for: it can drop a cancel on 3.11
                # shield: a caller that gives up does not cancel the ask the others share
                return await asyncio.shield(self._ask(name))
        except Exception:  # still starting, or unreachable: the spec speaks for it meanwhile
            self._failed_at[name] = time.monotonic()
            return None

    def _ask(self, name: str) -> asyncio.Task[ModelInfo]:
        """One describe() in flight per expert, shared by every caller. A burst of first requests
        used to send one each: on a starved CPU they queued up on an idle expert and its
        autoscaler counted them as load (seen scaling an unused expert in CI)."""
        task = self._asking.get(name)
        if task is None:
            task = asyncio.ensure_future(self._describe(name))
            self._asking[name] = task
            task.add_done_callback(lambda _t: self._asking.pop(name, None))
        return task

    async def _describe(self, name: str) -> ModelInfo:
        # Bounded on its own, so a describe() that never returns is asked again later.
        async with asyncio.timeout(ASK_TIMEOUT_S):
            info = await self.experts[name].describe()
        self._infos[name] = info
        return info

    def capabilities_of(self, name: str) -> Capabilities:
        info = self._infos.get(name)
        if info is not None and info.capabilities is not None:
            return info.capabilities
        return declared(self.specs[name])

    async def features(self) -> Mapping[str, frozenset[str]]:
        """Expert -> capability names, in the policy file's order (the engine's pool order)."""
        if self._features is not None:
            return self._features
        names = list(self.specs)
        await asyncio.gather(*(self.info(n, ROUTE_TIMEOUT_S) for n in names))
        table = MappingProxyType({n: self.capabilities_of(n).names() for n in names})
        if all(n in self._infos for n in names):
            self._features = table  # everyone answered: nothing left to ask
        return table
