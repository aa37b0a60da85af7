"""Rule 9 of policies.engine.decide: capability-aware routing (policies/capable.py)."""

from __future__ import annotations

from typing import Any

import pytest

from policies import (
    CompiledPolicy,
    ExpertStats,
    MissingCapability,
    RequestContext,
    RoutingPolicy,
    Scores,
    decide,
)
from policies.capable import filter_chain, restrict

CHAT = frozenset({"chat"})
TOOLS = frozenset({"chat", "tools"})
SCHEMA = frozenset({"chat", "json_schema"})
EMBED = frozenset({"embeddings"})
# In the policy file's order: the pool is searched in this order.
CAPS = {
    "small": CHAT,
    "coder": CHAT | {"json_object", "json_schema"},
    "big": CHAT | {"tools", "json_object", "json_schema", "logprobs"},
    "vision": CHAT | {"tools", "vision"},
    "minilm": EMBED,
    "moe": CHAT,
}
CODE = Scores("code", 0.9, False)


def policy(**overrides: Any) -> CompiledPolicy:
    base: dict[str, Any] = {
        "fallback": "moe",
        "routes": [{"domain": "code", "experts": ["small", "coder"]}],
    }
    base.update(overrides)
    return CompiledPolicy.build(RoutingPolicy.model_validate(base), list(CAPS))


def ctx(needs: frozenset[str] = CHAT, **kw: Any) -> RequestContext:
    return RequestContext(request_id="r1", needs=needs, **kw)


def test_plain_chat_is_not_filtered() -> None:
    plan = decide(policy(), CODE, ctx(), capabilities=CAPS)
    assert plan.chain == ("small", "coder", "moe")
    assert not any(t.startswith("needs:") for t in plan.trace)


def test_experts_lacking_a_need_leave_the_chain_and_the_reason_says_so() -> None:
    plan = decide(policy(), CODE, ctx(SCHEMA), capabilities=CAPS)
    assert plan.chain == ("coder",)
    assert "needs json_schema -> skipped small, moe" in plan.reason
    assert "needs:json_schema" in plan.trace


def test_no_capable_expert_in_the_chain_goes_to_the_first_capable_of_the_file() -> None:
    plan = decide(policy(), CODE, ctx(TOOLS), capabilities=CAPS)
    assert plan.chain == ("big", "vision")
    assert plan.trace[-1] == "capable_pool"
    assert "needs tools -> skipped small, coder, moe" in plan.reason
    assert "first expert with tools -> big" in plan.reason


def test_reject_mode_answers_400_naming_the_missing_capability() -> None:
    with pytest.raises(MissingCapability) as info:
        decide(policy(on_missing_capability="reject"), CODE, ctx(TOOLS), capabilities=CAPS)
    err = info.value
    assert (err.status_code, err.code, err.param) == (400, "unsupported_capability", "tools")
    assert err.missing == ("tools",)
    assert "needs tools" in err.message and "big, vision" in err.message


def test_nothing_anywhere_can_serve_is_400() -> None:
    needs = frozenset({"chat", "tools", "logprobs", "vision"})
    with pytest.raises(MissingCapability) as info:
        decide(policy(), CODE, ctx(needs), capabilities=CAPS)
    assert info.value.param == "tools"
    assert "tools, logprobs, vision" in info.value.message


def test_the_pool_respects_the_team() -> None:
    teams = {"acme": {"allowed_experts": ["small", "coder", "moe", "vision"]}}
    plan = decide(policy(teams=teams), CODE, ctx(TOOLS, team="acme"), capabilities=CAPS)
    assert plan.chain == ("vision",)
    teams = {"acme": {"allowed_experts": ["small", "coder", "moe"]}}
    with pytest.raises(MissingCapability):
        decide(policy(teams=teams), CODE, ctx(TOOLS, team="acme"), capabilities=CAPS)


def test_a_pinned_expert_lacking_a_need_is_400() -> None:
    with pytest.raises(MissingCapability) as info:
        decide(policy(), CODE, ctx(TOOLS, pinned_model="small"), capabilities=CAPS)
    assert info.value.param == "tools" and "'small'" in info.value.message
    plan = decide(policy(), CODE, ctx(TOOLS, pinned_model="big"), capabilities=CAPS)
    assert plan.chain == ("big",)


def test_images_name_messages_and_json_names_response_format() -> None:
    with pytest.raises(MissingCapability) as info:
        decide(policy(), CODE, ctx(CHAT | {"vision"}, pinned_model="big"), capabilities=CAPS)
    assert info.value.param == "messages"
    with pytest.raises(MissingCapability) as info:
        decide(policy(), CODE, ctx(SCHEMA, pinned_model="small"), capabilities=CAPS)
    assert info.value.param == "response_format"


def test_embeddings_go_to_the_embedding_pool_without_domain_rules() -> None:
    plan = decide(policy(), Scores("embeddings", 1.0, False), ctx(EMBED), capabilities=CAPS)
    assert plan.chain == ("minilm",)
    assert plan.trace == ("capable_pool",)
    assert plan.reason == "first expert with embeddings -> minilm"
    with pytest.raises(MissingCapability) as info:
        decide(policy(), CODE, ctx(EMBED, pinned_model="big"), capabilities=CAPS)
    assert info.value.missing == ("embeddings",) and info.value.param == "model"


def test_skipping_for_latency_never_brings_back_an_incapable_expert() -> None:
    stats = {"coder": ExpertStats(healthy=False)}
    plan = decide(policy(), CODE, ctx(SCHEMA), stats, capabilities=CAPS)
    assert plan.chain == ("coder",)  # unhealthy, but the only one that can: kept, never small


def test_shadow_copies_go_only_to_capable_experts() -> None:
    p = policy(shadow=[{"expert": "small", "percent": 100}, {"expert": "big", "percent": 100}])
    assert decide(p, CODE, ctx(TOOLS), capabilities={**CAPS, "coder": TOOLS}).shadow == "big"


def test_unknown_capabilities_stay_in_the_chain_but_are_never_picked_from_the_pool() -> None:
    caps = {k: v for k, v in CAPS.items() if k != "coder"}
    assert filter_chain(["small", "coder"], TOOLS, caps).kept == ("coder",)
    with pytest.raises(MissingCapability):  # "coder" is unknown there: never picked
        restrict(["small"], TOOLS, {"small": CHAT}, allowed=["small", "coder"])


def test_no_needs_or_no_capabilities_filter_nothing() -> None:
    assert decide(policy(), CODE, RequestContext(), capabilities=CAPS).chain[0] == "small"
    assert decide(policy(), CODE, ctx(TOOLS)).chain[0] == "small"
