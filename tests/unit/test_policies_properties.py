"""Properties of decide() over generated policies, classifications, contexts and live stats."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from policies import (
    CompiledPolicy,
    ExpertStats,
    NoAllowedExpert,
    RequestContext,
    RoutingPolicy,
    Scores,
    decide,
)
from policies.bucket import bucket

NAMES = ["moe", "a", "b", "c", "d", "e"]
DOMAINS = ["code", "math", "law", "chat"]

names = st.sampled_from(NAMES)
unit = st.floats(0, 1, allow_nan=False)


@st.composite
def policies(draw: st.DrawFn) -> RoutingPolicy:
    routes = []
    for domain in draw(st.lists(st.sampled_from(DOMAINS), unique=True, max_size=4)):
        route: dict[str, Any] = {
            "domain": domain,
            "experts": draw(st.lists(names, min_size=1, max_size=4)),
            "min_confidence": draw(unit),
        }
        if draw(st.booleans()):
            route["escalate"] = {"threshold": draw(unit), "expert": draw(names)}
        if draw(st.booleans()):
            route["cheap_expert"] = draw(names)
        routes.append(route)
    splits = []
    for r in routes:
        if draw(st.booleans()):
            w = draw(unit)
            splits.append(
                {
                    "domain": r["domain"],
                    "arms": [
                        {"expert": draw(names), "weight": w},
                        {"expert": draw(names), "weight": 1 - w},
                    ],
                }
            )
    data: dict[str, Any] = {
        "fallback": "moe",
        "routes": routes,
        "splits": splits,
        "allow_pinning": draw(st.booleans()),
        "shadow": [
            {"expert": draw(names), "percent": draw(st.floats(0, 100))}
            for _ in range(draw(st.integers(0, 2)))
        ],
        "overrides": [{"name": "kw", "expert": draw(names), "keywords": ["magic"]}]
        if draw(st.booleans())
        else [],
        "budget_downgrade": {"used_fraction": draw(unit), "expert": draw(st.none() | names)}
        if draw(st.booleans())
        else None,
        "teams": {
            "t": {
                "allowed_experts": ["moe", *draw(st.lists(names, max_size=3))],
                "default_route": draw(
                    st.none() | st.sampled_from([r["domain"] for r in routes] or [None])
                ),
            }
        },
        "skip_slow_experts": draw(st.booleans()),
    }
    return RoutingPolicy.model_validate(data)


scores = st.builds(Scores, st.sampled_from(DOMAINS), unit, st.booleans(), st.none() | unit)
stats = st.dictionaries(
    names,
    st.builds(ExpertStats, st.none() | st.floats(0, 2000), st.booleans(), st.booleans()),
)
contexts = st.builds(
    RequestContext,
    text=st.sampled_from(["", "hello", "some magic words", "MAGIC"]),
    team=st.none() | st.just("t") | st.just("other"),
    user=st.none() | st.text(max_size=8),
    request_id=st.text(max_size=8),
    budget_used_fraction=st.none() | unit,
)


class _Slo:
    def __init__(self, slo: float | None) -> None:
        self.slo_p95_ms = slo


@settings(max_examples=150, deadline=None)
@given(policies(), scores, contexts, stats, st.dictionaries(names, st.floats(1, 1000)))
def test_plan_invariants(
    p: RoutingPolicy,
    s: Scores,
    c: RequestContext,
    live: dict[str, ExpertStats],
    slos: dict[str, float],
) -> None:
    cp = CompiledPolicy.build(p, {n: _Slo(slos.get(n)) for n in NAMES})
    plan = decide(cp, s, c, live)
    assert plan.expert in NAMES
    assert set(plan.fallbacks) <= set(NAMES)
    assert len(set(plan.chain)) == len(plan.chain)  # no duplicates
    assert plan.reason and plan.trace
    team = p.teams.get(c.team) if c.team else None
    if team is not None and team.allowed_experts is not None:
        assert set(plan.chain) <= set(team.allowed_experts)
        if plan.shadow is not None:
            assert plan.shadow in team.allowed_experts
    assert plan.shadow != plan.expert
    assert not set(plan.skipped) & set(plan.chain)
    if not p.skip_slow_experts:
        assert plan.skipped == ()
    assert plan == decide(cp, s, c, live)  # deterministic


@settings(max_examples=100, deadline=None)
@given(policies(), scores, contexts)
def test_healthy_chain_always_holds_fallback_unless_team_forbids(
    p: RoutingPolicy, s: Scores, c: RequestContext
) -> None:
    plan = decide(p, s, c)
    if c.team == "t":
        return
    assert "moe" in plan.chain


@settings(max_examples=100, deadline=None)
@given(policies(), scores, contexts.filter(lambda c: c.team != "t"), st.sampled_from(NAMES))
def test_every_expert_down_still_gives_a_plan(
    p: RoutingPolicy, s: Scores, c: RequestContext, _: str
) -> None:
    dead = dict.fromkeys(NAMES, ExpertStats(healthy=False))
    plan = decide(p, s, c, dead)
    assert len(plan.chain) >= 1
    if p.skip_slow_experts:
        assert plan.chain == ("moe",)


def test_shadow_share_tracks_percent() -> None:
    for percent in (2.0, 37.5, 90.0):
        p = RoutingPolicy.model_validate(
            {
                "fallback": "moe",
                "routes": [{"domain": "code", "experts": ["a"]}],
                "shadow": [{"expert": "b", "percent": percent}],
            }
        )
        cp = CompiledPolicy.build(p)
        n = 4_000
        hits = sum(
            decide(cp, Scores("code", 0.9, False), RequestContext(request_id=f"req-{i}")).shadow
            == "b"
            for i in range(n)
        )
        assert abs(hits / n - percent / 100) < 0.02, (percent, hits / n)


def test_split_share_within_tolerance_and_sticky() -> None:
    for weight in (0.1, 0.7):
        p = RoutingPolicy.model_validate(
            {
                "fallback": "moe",
                "routes": [{"domain": "code", "experts": ["a"]}],
                "splits": [
                    {
                        "domain": "code",
                        "arms": [
                            {"expert": "a", "weight": weight},
                            {"expert": "b", "weight": 1 - weight},
                        ],
                    }
                ],
            }
        )
        cp = CompiledPolicy.build(p)
        n = 4_000
        first = {}
        for i in range(n):
            first[f"user-{i}"] = decide(
                cp, Scores("code", 0.9, False), RequestContext(user=f"user-{i}", request_id="x")
            ).expert
        share = sum(e == "a" for e in first.values()) / n
        assert abs(share - weight) < 0.025, (weight, share)
        for i in range(0, n, 97):  # same user, other requests: same arm
            again = decide(
                cp,
                Scores("code", 0.9, False),
                RequestContext(user=f"user-{i}", request_id=f"other-{i}"),
            )
            assert again.expert == first[f"user-{i}"]


@given(st.text(), st.text())
def test_bucket_is_in_unit_interval_and_stable(a: str, b: str) -> None:
    x = bucket(a, b)
    assert 0 <= x < 1
    assert x == bucket(a, b)


def test_bucket_does_not_depend_on_python_hash_seed() -> None:
    # other processes with other hash seeds must agree, or users would flip arms on restart
    assert bucket("split", "code", "alice") == bucket("split", "code", "alice")
    import subprocess
    import sys

    code = "from policies.bucket import bucket; print(repr(bucket('split','code','alice')))"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            cwd=str(__import__("pathlib").Path(__file__).parents[2]),
        ).stdout
        for seed in ("1", "2")
    }
    assert outs == {repr(bucket("split", "code", "alice")) + "\n"}


def test_no_allowed_expert_only_when_team_forbids_everything() -> None:
    p = RoutingPolicy.model_validate(
        {
            "fallback": "moe",
            "routes": [{"domain": "code", "experts": ["a"]}],
            "teams": {"t": {"allowed_experts": ["b"]}},
        }
    )
    try:
        decide(p, Scores("code", 0.9, False), RequestContext(team="t"))
    except NoAllowedExpert as exc:
        assert "team 't'" in exc.message
    else:
        raise AssertionError("expected NoAllowedExpert")
