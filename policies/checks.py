"""Cross-checks a schema can't express: names that must exist, weights, unreachable rules.

Paths are relative to the document root (`prefix` is where the routing part sits), so the loader
can put a line:column on each issue.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from policies.issues import Loc, PolicyIssue, Severity, did_you_mean
from policies.schema import RoutingPolicy

WEIGHT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class _Ref:
    """One place in the policy that names an expert."""

    loc: Loc
    name: str


def _expert_refs(p: RoutingPolicy) -> Iterator[_Ref]:
    yield _Ref(("fallback",), p.fallback)
    for i, r in enumerate(p.routes):
        for j, e in enumerate(r.experts):
            yield _Ref(("routes", i, "experts", j), e)
        if r.escalate:
            yield _Ref(("routes", i, "escalate", "expert"), r.escalate.expert)
        if r.cheap_expert:
            yield _Ref(("routes", i, "cheap_expert"), r.cheap_expert)
    for i, o in enumerate(p.overrides):
        yield _Ref(("overrides", i, "expert"), o.expert)
    for team, t in p.teams.items():
        for j, e in enumerate(t.allowed_experts or ()):
            yield _Ref(("teams", team, "allowed_experts", j), e)
    for i, s in enumerate(p.splits):
        for j, a in enumerate(s.arms):
            yield _Ref(("splits", i, "arms", j, "expert"), a.expert)
    for i, sh in enumerate(p.shadow):
        yield _Ref(("shadow", i, "expert"), sh.expert)
    if p.budget_downgrade and p.budget_downgrade.expert:
        yield _Ref(("budget_downgrade", "expert"), p.budget_downgrade.expert)


class _Issues:
    def __init__(self, prefix: Loc) -> None:
        self.prefix = prefix
        self.items: list[PolicyIssue] = []

    def add(
        self,
        loc: Loc,
        message: str,
        suggestion: str | None = None,
        severity: Severity = "error",
    ) -> None:
        self.items.append(PolicyIssue(message, (*self.prefix, *loc), suggestion, severity))

    def unknown(self, loc: Loc, what: str, name: str, known: Collection[str]) -> None:
        hint = did_you_mean(name, known)
        suggestion = f"did you mean '{hint}'?" if hint else _known_list(what, known)
        self.add(loc, f"unknown {what} '{name}'", suggestion)


def _known_list(what: str, known: Collection[str]) -> str | None:
    if not known:
        return None
    names = sorted(known)
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return f"known {what}s: {shown}"


def check_routing(
    policy: RoutingPolicy,
    expert_names: Collection[str],
    known_domains: Collection[str] | None = None,
    *,
    prefix: Loc = ("routing",),
) -> list[PolicyIssue]:
    """Every problem the engine would otherwise meet at request time, errors and warnings."""
    out = _Issues(prefix)
    experts = set(expert_names)
    for ref in _expert_refs(policy):
        if ref.name not in experts:
            out.unknown(ref.loc, "expert", ref.name, experts)
    _check_routes(policy, known_domains, out)
    _check_overrides(policy, out)
    _check_teams(policy, out)
    _check_splits(policy, out)
    _check_shadow(policy, known_domains, out)
    return out.items


def _check_routes(p: RoutingPolicy, known: Collection[str] | None, out: _Issues) -> None:
    first: dict[str, int] = {}
    for i, r in enumerate(p.routes):
        if r.domain in first:
            out.add(
                ("routes", i, "domain"),
                f"unreachable route: domain '{r.domain}' is already routed by "
                f"routes[{first[r.domain]}]",
                "merge the two routes or remove this one",
            )
            continue
        first[r.domain] = i
        if known is not None and r.domain not in known:
            hint = did_you_mean(r.domain, known)
            out.add(
                ("routes", i, "domain"),
                f"unreachable route: the classifier has no domain '{r.domain}'",
                f"did you mean '{hint}'?" if hint else _known_list("domain", known),
            )
        seen: set[str] = set()
        for j, e in enumerate(r.experts):
            if e in seen:
                out.add(
                    ("routes", i, "experts", j),
                    f"expert '{e}' is listed twice",
                    severity="warning",
                )
            seen.add(e)
        if r.escalate and r.escalate.expert == r.experts[0]:
            out.add(
                ("routes", i, "escalate", "expert"),
                f"escalation expert '{r.escalate.expert}' is already the route's first choice",
                "escalate to a stronger expert",
            )
        if r.cheap_expert and r.cheap_expert == r.experts[0]:
            out.add(
                ("routes", i, "cheap_expert"),
                f"cheap_expert '{r.cheap_expert}' is already the route's first choice",
                severity="warning",
            )
        if r.min_confidence >= 1.0:
            out.add(
                ("routes", i, "min_confidence"),
                "min_confidence 1.0 sends nearly every prompt to the fallback",
                severity="warning",
            )


def _matches_everything(pattern: str, case_sensitive: bool) -> bool:
    return re.compile(pattern, 0 if case_sensitive else re.IGNORECASE).search("") is not None


def _check_overrides(p: RoutingPolicy, out: _Issues) -> None:
    names: dict[str, int] = {}
    catch_all: int | None = None
    for i, o in enumerate(p.overrides):
        if o.name in names:
            out.add(
                ("overrides", i, "name"),
                f"duplicate override name '{o.name}' (also overrides[{names[o.name]}])",
            )
        names.setdefault(o.name, i)
        if catch_all is not None:
            out.add(
                ("overrides", i),
                f"unreachable override '{o.name}': overrides[{catch_all}] matches every prompt",
            )
            continue
        if not any(k.strip() for k in o.keywords) and o.regex is None:
            out.add(("overrides", i), f"override '{o.name}' has no keywords and no regex")
        elif o.regex is not None and _matches_everything(o.regex, o.case_sensitive):
            catch_all = i
            out.add(
                ("overrides", i, "regex"),
                f"regex {o.regex!r} matches every prompt (even an empty one): "
                "no route, split or escalation is ever used",
                "anchor it or require at least one character",
            )


def _check_teams(p: RoutingPolicy, out: _Issues) -> None:
    domains = {r.domain for r in p.routes}
    for name, t in p.teams.items():
        default = p.route_for(t.default_route) if t.default_route else None
        if t.default_route and default is None:
            out.unknown(("teams", name, "default_route"), "route domain", t.default_route, domains)
        if t.allowed_experts is None:
            continue
        last_resort = {p.fallback, *(default.experts if default else ())}
        if not last_resort & set(t.allowed_experts):
            out.add(
                ("teams", name, "allowed_experts"),
                f"team '{name}' may use neither the fallback '{p.fallback}' nor its default "
                "route's experts: its out-of-scope prompts would have no expert",
                f"add '{p.fallback}' or set a default_route",
            )


def _check_splits(p: RoutingPolicy, out: _Issues) -> None:
    domains = {r.domain for r in p.routes}
    first: dict[str, int] = {}
    for i, s in enumerate(p.splits):
        total = sum(a.weight for a in s.arms)
        if abs(total - 1.0) > WEIGHT_TOLERANCE:
            out.add(
                ("splits", i, "arms"),
                f"split weights sum to {total:g}, not 1",
                "make the weights add up to 1 (e.g. 0.5 and 0.5)",
            )
        if s.domain not in domains:
            out.unknown(("splits", i, "domain"), "route domain", s.domain, domains)
        if s.domain in first:
            out.add(
                ("splits", i, "domain"),
                f"unreachable split: domain '{s.domain}' is already split by "
                f"splits[{first[s.domain]}]",
            )
        first.setdefault(s.domain, i)
        arms = [a.expert for a in s.arms]
        if len(set(arms)) != len(arms):
            out.add(("splits", i, "arms"), "an expert appears in two arms", severity="warning")


def _check_shadow(p: RoutingPolicy, known: Collection[str] | None, out: _Issues) -> None:
    domains = set(known) if known is not None else {r.domain for r in p.routes}
    for i, sh in enumerate(p.shadow):
        if sh.percent == 0:
            out.add(("shadow", i, "percent"), "percent 0 never shadows", severity="warning")
        for j, d in enumerate(sh.domains or ()):
            if d not in domains:
                out.unknown(("shadow", i, "domains", j), "domain", d, domains)
