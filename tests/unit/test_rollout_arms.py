"""Canary arms and shadow scoring: share, stickiness, and that shadow never changes an answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from classifiers.base import Classification, Classifier
from classifiers.spec import ClassifierSpec
from router.continuous.arms import (
    RolloutCaller,
    agrees,
    canary_arm,
    shadow_sampled,
    sticky_key,
)
from router.continuous.spec import ClassifierRollout
from router.serving.callers import InProcessClassifier

CANDIDATE = ClassifierSpec(kind="artifact", path="artifacts/candidate")


def canary(percent: float, **kw: object) -> ClassifierRollout:
    return ClassifierRollout(candidate=CANDIDATE, mode="canary", percent=percent, **kw)  # type: ignore[arg-type]


class KeywordClassifier(Classifier):
    """Labels by the first keyword found; nothing found -> out of scope."""

    def __init__(self, keywords: dict[str, str]) -> None:
        self.keywords = keywords

    @property
    def labels(self) -> Sequence[str]:
        return sorted(set(self.keywords.values()))

    def classify(self, texts: Sequence[str]) -> list[Classification]:
        out = []
        for t in texts:
            label = next((lab for kw, lab in self.keywords.items() if kw in t), None)
            scores = {lab: 1.0 if lab == label else 0.0 for lab in self.labels}
            out.append(
                Classification(
                    scores, label or self.labels[0], 1.0 if label else 0.2, label is None
                )
            )
        return out


class Failing(Classifier):
    labels = ("x",)

    def classify(self, texts: Sequence[str]) -> list[Classification]:
        raise RuntimeError("candidate broke")


class Blocked:
    """A candidate that answers only once `gate` is set."""

    def __init__(self, inner: InProcessClassifier) -> None:
        self.inner = inner
        self.gate = asyncio.Event()

    async def classify(self, text: str) -> Classification:
        await self.gate.wait()
        return await self.inner.classify(text)


LIVE = KeywordClassifier({"integral": "math", "oven": "cooking", "flight": "travel"})
OTHER = KeywordClassifier({"integral": "math", "oven": "travel", "hotel": "travel"})
PROMPTS = [
    f"{w} question number {i}"
    for i in range(60)
    for w in ("integral", "oven", "flight", "hotel", "poem")
]


# ---- canary --------------------------------------------------------------------------------


@pytest.mark.parametrize("percent", [1, 10, 50])
def test_canary_share_is_within_tolerance_over_many_users(percent: float) -> None:
    ro = canary(percent)
    n = 20_000
    share = sum(canary_arm(ro, f"user:u{i}") == "candidate" for i in range(n)) / n
    # binomial sd at 50% and n=20,000 is 0.35 points: 1 point is ~3 sd
    assert abs(share - percent / 100) < 0.01


def test_canary_is_sticky_per_user_and_widening_keeps_users_in() -> None:
    users = [f"user:u{i}" for i in range(5000)]
    at5 = {u for u in users if canary_arm(canary(5), u) == "candidate"}
    again = {u for u in users if canary_arm(canary(5), u) == "candidate"}  # another replica
    at20 = {u for u in users if canary_arm(canary(20), u) == "candidate"}
    assert at5 == again
    assert at5 < at20
    assert canary_arm(None, users[0]) == "current"
    assert canary_arm(canary(0), users[0]) == "current"


def test_sticky_key_falls_back_from_user_to_key_to_team_to_request() -> None:
    ro = canary(10)
    assert sticky_key(ro, user="u", key_id="k", team="t", request_id="r") == "user:u"
    assert sticky_key(ro, user=None, key_id="k", team="t", request_id="r") == "key:k"
    assert sticky_key(ro, user=None, key_id=None, team="t", request_id="r") == "team:t"
    assert sticky_key(ro, user=None, key_id=None, team=None, request_id="r") == "request:r"
    by_team = canary(10, sticky="team")
    assert sticky_key(by_team, user="u", key_id="k", team="t", request_id="r") == "team:t"


async def test_canary_routes_its_users_by_the_candidate_and_survives_its_failure() -> None:
    ro = canary(50)
    caller = RolloutCaller(InProcessClassifier(LIVE), InProcessClassifier(OTHER), ro)
    for i in range(200):
        key = f"user:u{i}"
        choice = await caller.classify("oven timer", key, f"r{i}")
        want = OTHER if canary_arm(ro, key) == "candidate" else LIVE
        assert choice.arm == canary_arm(ro, key)
        assert choice.classification == want.classify(["oven timer"])[0]
    assert caller.book.arms["candidate"] + caller.book.arms["current"] == 200

    broken = RolloutCaller(InProcessClassifier(LIVE), InProcessClassifier(Failing()), ro)
    for i in range(50):
        choice = await broken.classify("oven timer", f"user:u{i}", f"r{i}")
        assert choice.arm == "current"
        assert choice.classification == LIVE.classify(["oven timer"])[0]
    assert broken.book.canary_fallbacks == sum(
        canary_arm(ro, f"user:u{i}") == "candidate" for i in range(50)
    )


# ---- shadow --------------------------------------------------------------------------------


@pytest.mark.parametrize("candidate", [OTHER, Failing()], ids=["disagreeing", "failing"])
async def test_shadow_never_changes_the_answer(candidate: Classifier) -> None:
    ro = ClassifierRollout(candidate=CANDIDATE, mode="shadow", percent=100)
    caller = RolloutCaller(InProcessClassifier(LIVE), InProcessClassifier(candidate), ro)
    for i, text in enumerate(PROMPTS):
        choice = await caller.classify(text, f"user:u{i % 7}", f"r{i}")
        assert choice.arm == "current"
        assert choice.classification == LIVE.classify([text])[0]
    await caller.drain()
    book = caller.book
    if isinstance(candidate, Failing):
        assert (book.compared, book.errors) == (0, len(PROMPTS))
        return
    expected = sum(agrees(LIVE.classify([t])[0], OTHER.classify([t])[0]) for t in PROMPTS)
    # by hand: integral agrees (math), oven disagrees, flight: travel vs OOS, hotel: OOS vs
    # travel, poem: OOS both -> 2 of 5 kinds of prompt agree
    assert expected == len(PROMPTS) * 2 // 5
    assert (book.compared, book.agreed) == (len(PROMPTS), expected)
    assert book.agreement_rate == pytest.approx(0.4)
    assert book.pairs[("cooking", "travel")] == 60
    assert len(book.recent) == ro.keep_disagreements


async def test_shadow_answers_before_the_candidate_does() -> None:
    ro = ClassifierRollout(candidate=CANDIDATE, mode="shadow", percent=100)
    blocked = Blocked(InProcessClassifier(OTHER))
    caller = RolloutCaller(InProcessClassifier(LIVE), blocked, ro)
    choice = await asyncio.wait_for(caller.classify("oven", "user:a", "r1"), 5)
    assert choice.classification == LIVE.classify(["oven"])[0]
    assert caller.book.compared == 0  # the candidate has not answered yet
    blocked.gate.set()
    await caller.drain()
    assert (caller.book.compared, caller.book.agreed) == (1, 0)


async def test_shadow_sampling_and_the_inflight_cap() -> None:
    ro = ClassifierRollout(candidate=CANDIDATE, mode="shadow", percent=30, max_inflight=3)
    share = sum(shadow_sampled(ro, f"r{i}") for i in range(20_000)) / 20_000
    assert abs(share - 0.3) < 0.01
    full = ClassifierRollout(candidate=CANDIDATE, mode="shadow", percent=100, max_inflight=3)
    blocked = Blocked(InProcessClassifier(OTHER))
    caller = RolloutCaller(InProcessClassifier(LIVE), blocked, full)
    for i in range(10):
        await caller.classify("oven", "user:a", f"r{i}")
    assert caller.book.skipped == 7
    blocked.gate.set()
    await caller.drain()
    assert caller.book.compared == 3


async def test_rollout_gauges_read_the_book() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from router.continuous.gauges import register_rollout_gauges

    ro = ClassifierRollout(candidate=CANDIDATE, mode="shadow", percent=100)
    caller = RolloutCaller(InProcessClassifier(LIVE), InProcessClassifier(OTHER), ro)
    for i, text in enumerate(PROMPTS[:10]):  # integral, oven, flight, hotel, poem x2
        await caller.classify(text, "user:a", f"r{i}")
    await caller.drain()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    register_rollout_gauges(provider.get_meter("t"), lambda: caller)
    points = {
        m.name: p.value
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        for p in m.data.data_points
    }
    assert points["slm_router_shadow_compared"] == 10
    assert points["slm_router_shadow_agreement"] == pytest.approx(0.4)
    provider.shutdown()
