"""check_routing on policies built in code: each cross-check fires, and only when it should."""

from __future__ import annotations

from typing import Any

import pytest

from policies.checks import check_routing
from policies.issues import PolicyIssue, format_issues, format_path
from policies.schema import RoutingPolicy

EXPERTS = {"moe", "a", "b", "big", "cheap", "cand"}


def pol(**kw: Any) -> RoutingPolicy:
    data: dict[str, Any] = {
        "fallback": "moe",
        "routes": [{"domain": "code", "experts": ["a", "b"]}],
    }
    data.update(kw)
    return RoutingPolicy.model_validate(data)


def errors(p: RoutingPolicy, domains: set[str] | None = None) -> list[PolicyIssue]:
    return [i for i in check_routing(p, EXPERTS, domains) if i.severity == "error"]


def test_clean_policy_has_no_issues() -> None:
    p = pol(
        routes=[
            {
                "domain": "code",
                "experts": ["a", "b"],
                "escalate": {"threshold": 0.5, "expert": "big"},
                "cheap_expert": "cheap",
            },
            {"domain": "math", "experts": ["b"]},
        ],
        overrides=[{"name": "kw", "expert": "a", "keywords": ["x"]}],
        splits=[
            {
                "domain": "code",
                "arms": [{"expert": "a", "weight": 0.25}, {"expert": "b", "weight": 0.75}],
            }
        ],
        shadow=[{"expert": "cand", "percent": 5, "domains": ["code"]}],
        teams={"t": {"allowed_experts": ["a", "moe"], "default_route": "math"}},
        budget_downgrade={"used_fraction": 0.9, "expert": "cheap"},
    )
    assert check_routing(p, EXPERTS, {"code", "math"}) == []


@pytest.mark.parametrize(
    ("kw", "path"),
    [
        ({"fallback": "mo"}, "routing.fallback"),
        ({"routes": [{"domain": "code", "experts": ["a", "x"]}]}, "routing.routes[0].experts[1]"),
        (
            {
                "routes": [
                    {"domain": "c", "experts": ["a"], "escalate": {"threshold": 0.1, "expert": "x"}}
                ]
            },
            "routing.routes[0].escalate.expert",
        ),
        (
            {"routes": [{"domain": "c", "experts": ["a"], "cheap_expert": "x"}]},
            "routing.routes[0].cheap_expert",
        ),
        (
            {"overrides": [{"name": "o", "expert": "x", "keywords": ["k"]}]},
            "routing.overrides[0].expert",
        ),
        ({"teams": {"t": {"allowed_experts": ["moe", "x"]}}}, "routing.teams.t.allowed_experts[1]"),
        (
            {
                "splits": [
                    {
                        "domain": "code",
                        "arms": [{"expert": "a", "weight": 0.5}, {"expert": "x", "weight": 0.5}],
                    }
                ]
            },
            "routing.splits[0].arms[1].expert",
        ),
        ({"shadow": [{"expert": "x", "percent": 1}]}, "routing.shadow[0].expert"),
        ({"budget_downgrade": {"expert": "x"}}, "routing.budget_downgrade.expert"),
    ],
)
def test_every_expert_reference_is_checked(kw: dict[str, Any], path: str) -> None:
    found = errors(pol(**kw))
    assert [i.path for i in found] == [path], format_issues(found)
    assert found[0].message.startswith("unknown expert")


def test_unknown_expert_without_close_match_lists_known_names() -> None:
    (issue,) = errors(pol(fallback="zzzzzz"))
    assert issue.suggestion is not None and issue.suggestion.startswith("known experts: a, b, big")


def test_split_weights_must_sum_to_one_within_tolerance() -> None:
    arms = [{"expert": "a", "weight": 0.1 + 0.2}, {"expert": "b", "weight": 0.7}]
    assert errors(pol(splits=[{"domain": "code", "arms": arms}])) == []  # 0.30000000000000004
    arms[1]["weight"] = 0.69
    (issue,) = errors(pol(splits=[{"domain": "code", "arms": arms}]))
    assert issue.path == "routing.splits[0].arms" and "0.99" in issue.message


def test_duplicate_split_and_split_without_route() -> None:
    arms = [{"expert": "a", "weight": 0.5}, {"expert": "b", "weight": 0.5}]
    found = errors(
        pol(
            splits=[
                {"domain": "code", "arms": arms},
                {"domain": "code", "arms": arms},
                {"domain": "math", "arms": arms},
            ]
        )
    )
    assert [i.path for i in found] == ["routing.splits[1].domain", "routing.splits[2].domain"]
    assert "unreachable split" in found[0].message


def test_unreachable_override_after_catch_all() -> None:
    found = errors(
        pol(
            overrides=[
                {"name": "all", "expert": "a", "regex": "x*"},
                {"name": "late", "expert": "b", "keywords": ["k"]},
            ]
        )
    )
    assert [i.path for i in found] == ["routing.overrides[0].regex", "routing.overrides[1]"]
    assert "unreachable override 'late'" in found[1].message


def test_anchored_regex_is_not_a_catch_all() -> None:
    assert errors(pol(overrides=[{"name": "r", "expert": "a", "regex": r"^\s*SELECT\b"}])) == []


def test_duplicate_override_names() -> None:
    o = {"name": "same", "expert": "a", "keywords": ["k"]}
    (issue,) = errors(pol(overrides=[o, o]))
    assert issue.path == "routing.overrides[1].name"


def test_team_default_route_must_exist() -> None:
    (issue,) = errors(pol(teams={"t": {"default_route": "cod"}}))
    assert (
        issue.path == "routing.teams.t.default_route" and issue.suggestion == "did you mean 'code'?"
    )


def test_team_allowed_default_route_expert_is_enough_without_fallback() -> None:
    assert errors(pol(teams={"t": {"allowed_experts": ["b"], "default_route": "code"}})) == []


def test_known_domains_flag_routes_and_shadow_domains() -> None:
    p = pol(shadow=[{"expert": "cand", "percent": 5, "domains": ["cdoe"]}])
    found = errors(p, {"math"})
    assert [i.path for i in found] == ["routing.routes[0].domain", "routing.shadow[0].domains[0]"]
    assert check_routing(p, EXPERTS, None)[0].path == "routing.shadow[0].domains[0]"


def test_warnings() -> None:
    p = pol(
        routes=[
            {"domain": "code", "experts": ["a", "a"], "cheap_expert": "a", "min_confidence": 1.0}
        ],
        shadow=[{"expert": "cand", "percent": 0}],
        splits=[
            {
                "domain": "code",
                "arms": [{"expert": "a", "weight": 0.5}, {"expert": "a", "weight": 0.5}],
            }
        ],
    )
    issues = check_routing(p, EXPERTS)
    assert all(i.severity == "warning" for i in issues)
    assert {i.path for i in issues} == {
        "routing.routes[0].experts[1]",
        "routing.routes[0].cheap_expert",
        "routing.routes[0].min_confidence",
        "routing.shadow[0].percent",
        "routing.splits[0].arms",
    }


def test_prefix_and_under() -> None:
    (issue,) = check_routing(pol(fallback="mo"), EXPERTS, prefix=())
    assert issue.path == "fallback"
    assert issue.under("spec", 0).path == "spec[0].fallback"
    assert format_path(("a", 0, "b", 1)) == "a[0].b[1]"
    assert str(issue) == "<policy>: error: fallback: unknown expert 'mo'; did you mean 'moe'?"


def test_format_issues_orders_errors_first_and_counts() -> None:
    w = PolicyIssue("w", ("x",), severity="warning", file="f", line=1)
    e = PolicyIssue("e", ("y",), file="f", line=9, column=2)
    text = format_issues([w, e])
    assert text.splitlines() == [
        "f:9:2: error: y: e",
        "f:1: warning: x: w",
        "1 error(s), 1 warning(s)",
    ]
    assert format_issues([]) == "ok: no problems found"
