"""Every rule of policies.engine.decide, alone and against the rules before and after it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from policies import (
    CompiledPolicy,
    ExpertStats,
    ModelNotAllowed,
    ModelNotFound,
    NoAllowedExpert,
    PinningNotAllowed,
    PolicyError,
    RequestContext,
    RoutingPolicy,
    Scores,
    decide,
)

EXPERTS = {
    "moe",
    "code-small",
    "code-large",
    "code-tiny",
    "code-b",
    "math",
    "math-large",
    "sql",
    "legal",
    "candidate",
    "cheap",
}


def policy(**overrides: Any) -> RoutingPolicy:
    base: dict[str, Any] = {
        "fallback": "moe",
        "routes": [
            {
                "domain": "code",
                "experts": ["code-small", "code-b"],
                "min_confidence": 0.5,
                "escalate": {"threshold": 0.7, "expert": "code-large"},
                "cheap_expert": "code-tiny",
            },
            {"domain": "math", "experts": ["math"], "min_confidence": 0.3},
            {"domain": "legal", "experts": ["legal"]},
        ],
    }
    base.update(overrides)
    return RoutingPolicy.model_validate(base)


@dataclass(frozen=True)
class Slo:
    slo_p95_ms: float | None


def compiled(
    p: RoutingPolicy | None = None, slos: dict[str, float] | None = None
) -> CompiledPolicy:
    slos = slos or {}
    return CompiledPolicy.build(p or policy(), {n: Slo(slos.get(n)) for n in EXPERTS})


CODE = Scores("code", 0.9, False, escalate=0.1)


def ctx(**kw: Any) -> RequestContext:
    kw.setdefault("request_id", "req-1")
    return RequestContext(**kw)


# --- 4. domain ---------------------------------------------------------------------------------


def test_domain_route_chain_is_route_experts_then_fallback() -> None:
    plan = decide(compiled(), CODE, ctx())
    assert plan.chain == ("code-small", "code-b", "moe")
    assert plan.trace == ("domain:code",)
    assert "domain code (0.90) -> code-small" in plan.reason
    assert plan.domain == "code" and not plan.out_of_scope


def test_low_confidence_goes_to_fallback() -> None:
    plan = decide(compiled(), Scores("code", 0.49, False), ctx())
    assert plan.chain == ("moe",)
    assert plan.trace == ("low_confidence",)
    assert "0.49 < 0.50" in plan.reason


def test_confidence_equal_to_floor_is_routed() -> None:
    assert decide(compiled(), Scores("code", 0.5, False), ctx()).expert == "code-small"


def test_out_of_scope_goes_to_fallback_even_with_high_confidence() -> None:
    plan = decide(compiled(), Scores("code", 0.99, True), ctx())
    assert plan.chain == ("moe",)
    assert plan.trace == ("out_of_scope",)
    assert plan.out_of_scope and "out of scope" in plan.reason


def test_domain_without_route_goes_to_fallback() -> None:
    plan = decide(compiled(), Scores("cooking", 0.99, False), ctx())
    assert plan.chain == ("moe",)
    assert plan.trace == ("no_route",)
    assert "no route for domain 'cooking'" in plan.reason


def test_plain_routing_policy_is_accepted_and_compiled_on_the_fly() -> None:
    assert decide(policy(), CODE, ctx()).chain == decide(compiled(), CODE, ctx()).chain


def test_fallback_listed_in_route_is_not_duplicated() -> None:
    p = policy(routes=[{"domain": "code", "experts": ["moe", "code-small"]}])
    assert decide(compiled(p), CODE, ctx()).chain == ("moe", "code-small")


# --- 1. pin ------------------------------------------------------------------------------------


def test_pin_wins_over_everything_and_has_no_fallbacks() -> None:
    p = policy(
        overrides=[{"name": "sql", "expert": "sql", "keywords": ["select"]}],
        budget_downgrade={"used_fraction": 0.1},
        shadow=[{"expert": "candidate", "percent": 100}],
    )
    c = ctx(pinned_model="math", text="select 1", budget_used_fraction=0.99)
    plan = decide(
        compiled(p), Scores("code", 0.9, False, 0.99), c, {"math": ExpertStats(healthy=False)}
    )
    assert plan.chain == ("math",)
    assert plan.trace == ("pin",)
    assert plan.shadow is None
    assert plan.reason == "pinned by client: math"


@pytest.mark.parametrize("auto", ["auto", ""])
def test_auto_is_not_a_pin(auto: str) -> None:
    assert decide(compiled(), CODE, ctx(pinned_model=auto)).trace == ("domain:code",)


def test_pin_unknown_model_is_404_with_suggestion() -> None:
    with pytest.raises(ModelNotFound) as info:
        decide(compiled(), CODE, ctx(pinned_model="code-smal"))
    err = info.value
    assert (err.status_code, err.error_type, err.code) == (
        404,
        "invalid_request_error",
        "model_not_found",
    )
    assert "'code-small'" in err.message and err.param == "model"


def test_pin_known_expert_not_referenced_by_policy_is_allowed() -> None:
    # the deployment serves "cheap" even though no rule names it
    assert decide(compiled(), CODE, ctx(pinned_model="cheap")).expert == "cheap"


def test_pin_disabled_is_400() -> None:
    with pytest.raises(PinningNotAllowed) as info:
        decide(compiled(policy(allow_pinning=False)), CODE, ctx(pinned_model="math"))
    assert info.value.status_code == 400
    assert info.value.code == "model_pinning_disabled"
    assert isinstance(info.value, PolicyError)


def test_pin_disabled_but_ignored_routes_automatically() -> None:
    p = policy(allow_pinning=False, on_disallowed_pin="ignore")
    plan = decide(compiled(p), CODE, ctx(pinned_model="does-not-exist"))
    assert plan.expert == "code-small"
    assert plan.trace == ("pin_ignored", "domain:code")


def test_team_can_disable_or_enable_pinning() -> None:
    p = policy(allow_pinning=True, teams={"locked": {"allow_pinning": False}})
    with pytest.raises(PinningNotAllowed):
        decide(compiled(p), CODE, ctx(pinned_model="math", team="locked"))
    p = policy(allow_pinning=False, teams={"ops": {"allow_pinning": True}})
    assert decide(compiled(p), CODE, ctx(pinned_model="math", team="ops")).expert == "math"


def test_pin_outside_team_allowed_list_is_403() -> None:
    p = policy(teams={"acme": {"allowed_experts": ["moe", "math"]}})
    with pytest.raises(ModelNotAllowed) as info:
        decide(compiled(p), CODE, ctx(pinned_model="sql", team="acme"))
    assert info.value.status_code == 403 and info.value.code == "model_not_allowed"


def test_unknown_pin_is_404_before_team_check() -> None:
    p = policy(teams={"acme": {"allowed_experts": ["moe"]}})
    with pytest.raises(ModelNotFound):
        decide(compiled(p), CODE, ctx(pinned_model="nope", team="acme"))


# --- 2. override -------------------------------------------------------------------------------


OVR = [
    {"name": "sql", "expert": "sql", "keywords": ["select", "c++"]},
    {"name": "law", "expert": "legal", "regex": r"\bsection \d+\b"},
]


def test_keyword_override_matches_whole_words_case_insensitively() -> None:
    c = compiled(policy(overrides=OVR))
    plan = decide(c, CODE, ctx(text="please SELECT * from t"))
    assert plan.chain == ("sql", "moe")
    assert plan.trace == ("override:sql",)
    assert "'SELECT'" in plan.reason
    assert decide(c, CODE, ctx(text="the selection is fine")).expert == "code-small"
    assert decide(c, CODE, ctx(text="I write C++ daily")).expert == "sql"


def test_case_sensitive_override() -> None:
    o = [{"name": "sql", "expert": "sql", "keywords": ["SELECT"], "case_sensitive": True}]
    c = compiled(policy(overrides=o))
    assert decide(c, CODE, ctx(text="select 1")).expert == "code-small"
    assert decide(c, CODE, ctx(text="SELECT 1")).expert == "sql"


def test_regex_override_and_first_match_wins() -> None:
    c = compiled(policy(overrides=OVR))
    assert decide(c, CODE, ctx(text="see Section 12 of the act")).trace == ("override:law",)
    both = decide(c, CODE, ctx(text="select section 3"))
    assert both.trace == ("override:sql",)


def test_override_beats_out_of_scope_low_confidence_and_escalation() -> None:
    c = compiled(policy(overrides=OVR))
    for scores in (
        Scores("x", 0.1, True),
        Scores("code", 0.1, False),
        Scores("code", 0.9, False, 0.99),
    ):
        assert decide(c, scores, ctx(text="select")).expert == "sql"


def test_override_is_not_budget_downgraded_or_split() -> None:
    p = policy(
        overrides=OVR,
        budget_downgrade={"used_fraction": 0.5, "expert": "cheap"},
        splits=[
            {
                "domain": "code",
                "arms": [
                    {"expert": "code-b", "weight": 1.0},
                    {"expert": "code-small", "weight": 0.0},
                ],
            }
        ],
    )
    plan = decide(compiled(p), CODE, ctx(text="select", budget_used_fraction=0.9))
    assert plan.chain == ("sql", "moe")


# --- 3. team -----------------------------------------------------------------------------------


def test_team_default_route_replaces_fallback_for_out_of_scope() -> None:
    p = policy(teams={"lawyers": {"default_route": "legal"}})
    plan = decide(compiled(p), Scores("x", 0.2, True), ctx(team="lawyers"))
    assert plan.chain == ("legal", "moe")
    assert plan.trace == ("team:lawyers", "out_of_scope", "team_default_route:legal")
    assert "team lawyers default route legal" in plan.reason


def test_team_default_route_does_not_replace_a_confident_domain() -> None:
    p = policy(teams={"lawyers": {"default_route": "legal"}})
    assert decide(compiled(p), CODE, ctx(team="lawyers")).expert == "code-small"


def test_team_allowed_experts_filter_the_chain() -> None:
    p = policy(teams={"acme": {"allowed_experts": ["code-b", "moe"]}})
    plan = decide(compiled(p), CODE, ctx(team="acme"))
    assert plan.chain == ("code-b", "moe")
    assert "team_filter:acme" in plan.trace
    assert "code-small" in plan.reason


def test_team_filter_also_applies_to_overrides() -> None:
    p = policy(overrides=OVR, teams={"acme": {"allowed_experts": ["moe"]}})
    assert decide(compiled(p), CODE, ctx(team="acme", text="select")).chain == ("moe",)


def test_team_with_nothing_allowed_raises_403() -> None:
    p = policy(teams={"acme": {"allowed_experts": ["math"]}})
    with pytest.raises(NoAllowedExpert) as info:
        decide(compiled(p), CODE, ctx(team="acme"))
    assert info.value.status_code == 403


def test_unknown_team_gets_the_global_policy() -> None:
    p = policy(teams={"acme": {"allowed_experts": ["moe"]}})
    plan = decide(compiled(p), CODE, ctx(team="other"))
    assert plan.chain == ("code-small", "code-b", "moe")
    assert plan.trace == ("domain:code",)


# --- 5. budget ---------------------------------------------------------------------------------


def test_budget_downgrade_puts_route_cheap_expert_first() -> None:
    p = policy(budget_downgrade={"used_fraction": 0.8})
    plan = decide(compiled(p), CODE, ctx(budget_used_fraction=0.8))
    assert plan.chain == ("code-tiny", "code-small", "code-b", "moe")
    assert plan.trace == ("domain:code", "budget_downgrade")
    assert "80% used" in plan.reason


def test_budget_under_threshold_or_unknown_does_nothing() -> None:
    p = compiled(policy(budget_downgrade={"used_fraction": 0.8}))
    assert decide(p, CODE, ctx(budget_used_fraction=0.79)).expert == "code-small"
    assert decide(p, CODE, ctx(budget_used_fraction=None)).expert == "code-small"
    assert decide(compiled(), CODE, ctx(budget_used_fraction=1.0)).expert == "code-small"


def test_budget_downgrade_global_cheap_expert_for_routes_without_one_and_fallback() -> None:
    p = compiled(policy(budget_downgrade={"used_fraction": 0.5, "expert": "cheap"}))
    assert decide(p, Scores("math", 0.9, False), ctx(budget_used_fraction=0.6)).chain == (
        "cheap",
        "math",
        "moe",
    )
    assert decide(p, Scores("x", 0.9, True), ctx(budget_used_fraction=0.6)).chain == (
        "cheap",
        "moe",
    )
    # a route's own cheap expert wins over the global one
    assert decide(p, CODE, ctx(budget_used_fraction=0.6)).expert == "code-tiny"


def test_budget_downgrade_suppresses_escalation() -> None:
    p = compiled(policy(budget_downgrade={"used_fraction": 0.5}))
    plan = decide(p, Scores("code", 0.9, False, 0.95), ctx(budget_used_fraction=0.9))
    assert plan.expert == "code-tiny"
    assert "code-large" not in plan.chain
    assert "escalate" not in plan.trace


# --- 6. escalate -------------------------------------------------------------------------------


def test_escalation_at_or_above_threshold_puts_stronger_expert_first() -> None:
    for score in (0.7, 0.71, 1.0):
        plan = decide(compiled(), Scores("code", 0.9, False, score), ctx())
        assert plan.chain == ("code-large", "code-small", "code-b", "moe")
        assert plan.trace == ("domain:code", "escalate")


@pytest.mark.parametrize("score", [None, 0.0, 0.69])
def test_no_escalation_below_threshold_or_without_score(score: float | None) -> None:
    assert decide(compiled(), Scores("code", 0.9, False, score), ctx()).expert == "code-small"


def test_escalation_never_applies_to_fallback_plans() -> None:
    assert decide(compiled(), Scores("code", 0.2, False, 0.99), ctx()).chain == ("moe",)


# --- 7. split ----------------------------------------------------------------------------------

SPLIT = [
    {
        "domain": "code",
        "arms": [{"expert": "code-small", "weight": 0.5}, {"expert": "code-b", "weight": 0.5}],
    }
]


def test_split_is_sticky_per_user_across_requests_and_replicas() -> None:
    c1, c2 = compiled(policy(splits=SPLIT)), compiled(policy(splits=SPLIT))
    for user in ("alice", "bob", "carol", "dave"):
        arms = {
            decide(c, CODE, ctx(user=user, request_id=f"r{i}")).expert
            for i, c in enumerate([c1, c2] * 5)
        }
        assert len(arms) == 1


def test_split_uses_both_arms_and_records_them() -> None:
    c = compiled(policy(splits=SPLIT))
    plans = [decide(c, CODE, ctx(user=f"user-{i}")) for i in range(200)]
    assert {p.expert for p in plans} == {"code-small", "code-b"}
    for p in plans:
        assert p.trace == ("domain:code", f"split:code={p.expert}")
        assert p.chain[-1] == "moe" and set(p.chain) == {"code-small", "code-b", "moe"}


def test_split_without_user_falls_back_to_request_id() -> None:
    c = compiled(policy(splits=SPLIT))
    plan = decide(c, CODE, ctx(request_id="abc"))
    assert plan.expert == decide(c, CODE, ctx(request_id="abc")).expert
    assert "sticky per request" in plan.reason


def test_zero_weight_arm_is_never_chosen() -> None:
    s = [
        {
            "domain": "code",
            "arms": [{"expert": "code-small", "weight": 0.0}, {"expert": "code-b", "weight": 1.0}],
        }
    ]
    c = compiled(policy(splits=s))
    assert {decide(c, CODE, ctx(user=f"u{i}")).expert for i in range(100)} == {"code-b"}


def test_split_skips_escalated_and_downgraded_plans() -> None:
    c = compiled(policy(splits=SPLIT, budget_downgrade={"used_fraction": 0.5}))
    esc = decide(c, Scores("code", 0.9, False, 0.9), ctx(user="u"))
    assert esc.expert == "code-large" and not any(t.startswith("split") for t in esc.trace)
    down = decide(c, CODE, ctx(user="u", budget_used_fraction=0.9))
    assert down.expert == "code-tiny" and not any(t.startswith("split") for t in down.trace)


def test_split_arm_not_allowed_for_team_is_filtered() -> None:
    s = [
        {
            "domain": "code",
            "arms": [{"expert": "code-b", "weight": 1.0}, {"expert": "code-small", "weight": 0.0}],
        }
    ]
    p = policy(splits=s, teams={"acme": {"allowed_experts": ["code-small", "moe"]}})
    plan = decide(compiled(p), CODE, ctx(team="acme", user="u"))
    assert plan.chain == ("code-small", "moe")
    assert plan.trace[-2:] == ("split:code=code-b", "team_filter:acme")


# --- 9. latency skip ---------------------------------------------------------------------------


def test_slow_expert_over_slo_is_skipped() -> None:
    c = compiled(slos={"code-small": 500})
    plan = decide(c, CODE, ctx(), {"code-small": ExpertStats(p95_ms=900)})
    assert plan.chain == ("code-b", "moe")
    assert plan.skipped == ("code-small",)
    assert plan.trace == ("domain:code", "skip:code-small")
    assert "p95 900 ms > SLO 500 ms" in plan.reason


def test_expert_at_slo_or_without_slo_or_stats_is_kept() -> None:
    c = compiled(slos={"code-small": 500})
    assert decide(c, CODE, ctx(), {"code-small": ExpertStats(p95_ms=500)}).expert == "code-small"
    assert decide(c, CODE, ctx(), {"code-b": ExpertStats(p95_ms=10_000)}).expert == "code-small"
    assert (
        decide(compiled(), CODE, ctx(), {"code-small": ExpertStats(p95_ms=10_000)}).expert
        == "code-small"
    )


@pytest.mark.parametrize("stats", [ExpertStats(queue_full=True), ExpertStats(healthy=False)])
def test_full_or_unhealthy_expert_is_skipped(stats: ExpertStats) -> None:
    plan = decide(compiled(), CODE, ctx(), {"code-small": stats})
    assert plan.expert == "code-b"


def test_all_skipped_falls_through_to_fallback() -> None:
    bad = ExpertStats(healthy=False)
    plan = decide(compiled(), CODE, ctx(), dict.fromkeys(["code-small", "code-b", "moe"], bad))
    assert plan.chain == ("moe",)
    assert plan.trace[-1] == "all_skipped"
    assert plan.skipped == ("code-small", "code-b")


def test_all_skipped_for_team_without_fallback_keeps_last_allowed() -> None:
    p = policy(teams={"acme": {"allowed_experts": ["code-small", "code-b"]}})
    bad = ExpertStats(queue_full=True)
    plan = decide(compiled(p), CODE, ctx(team="acme"), dict.fromkeys(EXPERTS, bad))
    assert plan.chain == ("code-b",)


def test_skipping_can_be_turned_off() -> None:
    c = compiled(policy(skip_slow_experts=False))
    assert decide(c, CODE, ctx(), {"code-small": ExpertStats(healthy=False)}).expert == "code-small"


def test_escalated_expert_when_slow_is_skipped_for_the_route() -> None:
    c = compiled(slos={"code-large": 100})
    plan = decide(
        c, Scores("code", 0.9, False, 0.9), ctx(), {"code-large": ExpertStats(p95_ms=101)}
    )
    assert plan.chain == ("code-small", "code-b", "moe")
    assert plan.trace == ("domain:code", "escalate", "skip:code-large")


# --- 10. shadow --------------------------------------------------------------------------------


def test_shadow_100_percent_always_and_0_never() -> None:
    always = compiled(policy(shadow=[{"expert": "candidate", "percent": 100}]))
    never = compiled(policy(shadow=[{"expert": "candidate", "percent": 0}]))
    for i in range(50):
        c = ctx(request_id=f"r{i}")
        plan = decide(always, CODE, c)
        assert plan.shadow == "candidate" and plan.trace[-1] == "shadow:candidate"
        assert "candidate" not in plan.chain
        assert decide(never, CODE, c).shadow is None


def test_shadow_is_deterministic_per_request_id() -> None:
    c = compiled(policy(shadow=[{"expert": "candidate", "percent": 50}]))
    for i in range(50):
        assert (
            decide(c, CODE, ctx(request_id=f"r{i}")).shadow
            == decide(c, CODE, ctx(request_id=f"r{i}")).shadow
        )


def test_shadow_domain_filter_and_out_of_scope() -> None:
    c = compiled(policy(shadow=[{"expert": "candidate", "percent": 100, "domains": ["math"]}]))
    assert decide(c, CODE, ctx()).shadow is None
    assert decide(c, Scores("math", 0.9, False), ctx()).shadow == "candidate"
    assert decide(c, Scores("math", 0.9, True), ctx()).shadow is None


def test_shadow_skips_serving_expert_unhealthy_candidate_and_team_disallowed() -> None:
    sh = [{"expert": "code-small", "percent": 100}, {"expert": "candidate", "percent": 100}]
    c = compiled(policy(shadow=sh, teams={"acme": {"allowed_experts": ["code-small", "moe"]}}))
    assert decide(c, CODE, ctx()).shadow == "candidate"  # first entry is the serving expert
    assert decide(c, CODE, ctx(), {"candidate": ExpertStats(queue_full=True)}).shadow is None
    assert decide(c, CODE, ctx(team="acme")).shadow is None


# --- the order as a whole ----------------------------------------------------------------------


def test_full_order_of_trace() -> None:
    p = policy(
        splits=SPLIT,
        shadow=[{"expert": "candidate", "percent": 100}],
        teams={"acme": {"allowed_experts": ["code-small", "code-b", "moe", "candidate"]}},
    )
    c = compiled(p, slos={"code-large": 10})
    stats = {"code-large": ExpertStats(p95_ms=50)}
    # escalated, so not split; code-large isn't allowed for acme anyway
    plan = decide(c, Scores("code", 0.9, False, 0.9), ctx(team="acme", user="u"), stats)
    assert plan.trace == (
        "team:acme",
        "domain:code",
        "escalate",
        "team_filter:acme",
        "shadow:candidate",
    )
    assert plan.expert == "code-small"
    reasons = plan.reason.split("; ")
    assert len(reasons) == 4  # every fired rule except the team marker explains itself


def test_plan_is_frozen_and_serialisable() -> None:
    plan = decide(compiled(), CODE, ctx())
    with pytest.raises(AttributeError):
        plan.expert = "x"  # type: ignore[misc]
    d = plan.to_dict()
    assert (
        d["expert"] == "code-small"
        and d["fallbacks"] == ["code-b", "moe"]
        and d["trace"] == ["domain:code"]
    )


def test_keyword_gate_with_mixed_case_modes_and_order() -> None:
    o = [
        {"name": "rx", "expert": "legal", "regex": r"\bart\. \d+"},
        {"name": "cs", "expert": "math", "keywords": ["NaN"], "case_sensitive": True},
        {"name": "ci", "expert": "sql", "keywords": ["select", "select *"]},
    ]
    c = compiled(policy(overrides=o))
    assert c.keyword_hits("nothing here") == (False, False)
    assert c.keyword_hits("a NaN and a Select") == (True, True)
    assert decide(c, CODE, ctx(text="nan select")).trace == ("override:ci",)
    assert decide(c, CODE, ctx(text="NaN select")).trace == ("override:cs",)
    assert decide(c, CODE, ctx(text="see art. 5, select")).trace == ("override:rx",)
    assert "'select *'" in decide(c, CODE, ctx(text="SELECT * FROM t")).reason.lower()
    assert decide(c, CODE, ctx(text="nothing")).trace == ("domain:code",)


def test_plain_policy_checks_no_pins_and_is_compiled_once_per_policy_object() -> None:
    from policies import engine

    p = policy()
    # the caller (the gateway) checks pinned names against its experts itself
    assert decide(p, CODE, ctx(pinned_model="not-in-policy")).expert == "not-in-policy"
    first = engine._compiled_for(p)
    assert engine._compiled_for(p) is first
    reloaded = policy(routes=[{"domain": "code", "experts": ["math"]}])
    assert decide(reloaded, CODE, ctx()).expert == "math"
    assert engine._compiled_for(reloaded) is not first


def test_compiled_without_expert_specs_has_no_slos() -> None:
    c = CompiledPolicy.build(policy(), ["code-small"])
    assert c.slo_p95_ms == {} and c.experts == frozenset({"code-small"})
    assert decide(c, CODE, ctx(), {"code-small": ExpertStats(p95_ms=1e9)}).expert == "code-small"
    with pytest.raises(ModelNotFound):
        decide(c, CODE, ctx(pinned_model="moe"))
