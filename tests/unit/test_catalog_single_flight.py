"""The catalog asks each expert for its description once at a time, however many requests wait."""

from __future__ import annotations

import asyncio

from experts.base import ModelInfo
from experts.spec import ExpertSpec
from router.serving.catalog import Catalog


class SlowExpert:
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.calls = 0

    async def describe(self) -> ModelInfo:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        return ModelInfo(backend="fake", model="slow", context_window=4096)


def catalog(expert: SlowExpert) -> Catalog:
    return Catalog({"slow": ExpertSpec(backend="fake")}, {"slow": expert})


async def test_a_burst_of_waiting_requests_sends_one_describe() -> None:
    expert = SlowExpert(0.2)
    cat = catalog(expert)
    infos = await asyncio.gather(*(cat.info("slow", timeout=5) for _ in range(6)))
    assert expert.calls == 1 and all(i is not None and i.model == "slow" for i in infos)
    assert await cat.info("slow") is infos[0] and expert.calls == 1  # cached


async def test_callers_that_give_up_leave_one_ask_running_for_the_rest() -> None:
    expert = SlowExpert(0.3)
    cat = catalog(expert)
    # Six requests that wait at most 0.05 s each (the routing path's short wait): none cancels
    # the shared ask, and none starts a second one.
    quick = await asyncio.gather(*(cat.info("slow", timeout=0.05) for _ in range(6)))
    assert quick == [None] * 6 and expert.calls == 1
    await asyncio.sleep(0.4)  # the one ask finishes on its own and fills the cache
    assert expert.calls == 1 and cat.capabilities_of("slow") is not None
    assert (await cat.info("slow")) is not None and expert.calls == 1
