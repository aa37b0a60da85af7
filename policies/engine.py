"""The pure decision engine: scores + context + live stats -> RoutePlan. No Ray, no I/O.

Rules run in this order (policies/README.md explains each and why the order is what it is):

 1. pin        the client named an expert: allowed? known? allowed for the team? -> that alone
 2. override   keyword / regex overrides, first match in file order -> [override, fallback]
 3. team       the API key's team: its allowed experts and default route apply below
 4. domain     out of scope, no route or confidence under the route's floor -> the team's
               default route or the fallback; otherwise the route's ordered experts + fallback
 5. budget     a team past `budget_downgrade.used_fraction` gets the route's cheap expert first
 6. escalate   escalate score >= the route's threshold -> the stronger expert first (not when
               downgraded: an over-budget team does not escalate to a dearer model)
 7. split      A/B arms for the domain's first choice, sticky per user
 8. team_filter experts the team may not use leave the chain
 9. capable    experts lacking what the request needs (tools, json_schema, ...) leave the
               chain; none left -> the first capable expert of the file, or 400 naming it
10. skip       experts unhealthy, with a full queue or with live p95 over their SLO leave the
               chain; if none is left the fallback stays (never an empty chain)
11. shadow     a discarded copy to a candidate for `percent` % of requests (per request id)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from policies.bucket import bucket
from policies.capable import Capabilities, missing, refuse_pin, restrict
from policies.compiled import CompiledPolicy
from policies.errors import ModelNotAllowed, ModelNotFound, NoAllowedExpert, PinningNotAllowed
from policies.issues import did_you_mean
from policies.schema import Route, RoutingPolicy, TeamPolicy
from policies.types import ExpertStats, RequestContext, RoutePlan, Scores

AUTO_MODELS = frozenset({"", "auto"})
_HEALTHY = ExpertStats()


def _dedupe(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(names))


@dataclass
class _Notes:
    """Collects what fired while one request is decided; never leaves this module."""

    trace: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def add(self, rule: str, reason: str | None = None) -> None:
        self.trace.append(rule)
        if reason:
            self.reasons.append(reason)


@dataclass(frozen=True)
class _Base:
    """The chain before budget, escalation, splits and filters."""

    chain: list[str]
    route: Route | None  # the route the chain came from (domain or team default)
    from_domain: bool  # the classifier's own domain route, not a fallback or override
    from_override: bool = False


_CACHE_SIZE = 8
_cache: OrderedDict[int, tuple[RoutingPolicy, CompiledPolicy]] = OrderedDict()


def _compiled_for(policy: RoutingPolicy) -> CompiledPolicy:
    """Callers passing a plain RoutingPolicy still compile once per policy, not per request.
    Entries hold the policy itself, so an id is never reused while cached."""
    hit = _cache.get(id(policy))
    if hit is not None and hit[0] is policy:
        return hit[1]
    compiled = CompiledPolicy.build(policy)
    _cache[id(policy)] = (policy, compiled)
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return compiled


def decide(
    policy: RoutingPolicy | CompiledPolicy,
    scores: Scores,
    ctx: RequestContext,
    stats: Mapping[str, ExpertStats] | None = None,
    capabilities: Capabilities | None = None,
) -> RoutePlan:
    """Turn one classified request into a plan. Raises a PolicyError for refused pins.

    Pass a CompiledPolicy (built once per load with the deployment's experts) so pinned names
    are checked and SLOs known; a plain RoutingPolicy is compiled once and cached, without
    either (unknown pins pass: the caller checks them; p95 is never over an unknown SLO,
    but unhealthy experts and full queues are still skipped). `capabilities` (expert -> what
    it can do, in the file's order) with `ctx.needs` filters the chain (rule 9)."""
    cp = policy if isinstance(policy, CompiledPolicy) else _compiled_for(policy)
    live: Mapping[str, ExpertStats] = stats or {}
    team = cp.policy.teams.get(ctx.team) if ctx.team else None
    notes = _Notes()
    caps: Capabilities = capabilities or {}
    pinned = _pin(cp, team, scores, ctx, notes, caps)
    if pinned is not None:
        return pinned
    if ctx.is_chat:
        chain = _chat_chain(cp, team, scores, ctx, notes)
        chain = _capable(cp, team, ctx, chain, caps, notes)
    else:  # embeddings: the domain routes are chat experts; the pool of capable ones decides
        chain = _capable(cp, team, ctx, [], caps, notes)
    chain, skipped = _skip_slow(cp, live, chain, notes)
    shadow = _shadow(cp, team, scores, ctx, live, chain[0], notes, caps)
    return RoutePlan(
        expert=chain[0],
        fallbacks=tuple(chain[1:]),
        domain=scores.label,
        reason="; ".join(notes.reasons),
        trace=tuple(notes.trace),
        shadow=shadow,
        out_of_scope=scores.out_of_scope,
        skipped=tuple(skipped),
    )


def _chat_chain(
    cp: CompiledPolicy,
    team: TeamPolicy | None,
    scores: Scores,
    ctx: RequestContext,
    notes: _Notes,
) -> list[str]:
    """Rules 2-8: override or domain, then budget, escalation, split and the team filter."""
    base = _override(cp, ctx, notes) or _domain(cp, team, ctx, scores, notes)
    chain = base.chain
    downgraded = False
    if not base.from_override:
        chain, downgraded = _budget(cp, base, ctx, chain, notes)
    if base.from_domain and not downgraded:
        chain = _escalate(base, scores, chain, notes)
    if base.from_domain:
        chain = _split(cp, base, ctx, chain, notes)
    return _team_filter(team, ctx, chain, notes)


def _pin(
    cp: CompiledPolicy,
    team: TeamPolicy | None,
    scores: Scores,
    ctx: RequestContext,
    notes: _Notes,
    caps: Capabilities,
) -> RoutePlan | None:
    name = ctx.pinned_model
    if name is None or name in AUTO_MODELS:
        return None
    allowed = cp.policy.allow_pinning
    if team is not None and team.allow_pinning is not None:
        allowed = team.allow_pinning
    if not allowed:
        if cp.policy.on_disallowed_pin == "ignore":
            notes.add("pin_ignored", f"pin '{name}' ignored: pinning is disabled")
            return None
        scope = f" for team '{ctx.team}'" if team is not None else ""
        raise PinningNotAllowed(
            f"Choosing a model is disabled{scope} by the routing policy; use model 'auto'.",
            param="model",
        )
    if cp.experts is not None and name not in cp.experts:
        hint = did_you_mean(name, cp.experts)
        tail = f" Did you mean '{hint}'?" if hint else " Use model 'auto' or one from /v1/models."
        raise ModelNotFound(f"The model '{name}' does not exist.{tail}", param="model")
    if team is not None and team.allowed_experts is not None and name not in team.allowed_experts:
        raise ModelNotAllowed(
            f"The model '{name}' is not allowed for team '{ctx.team}'.", param="model"
        )
    lacks = missing(name, ctx.needs, caps)
    if lacks:
        raise refuse_pin(name, lacks)
    return RoutePlan(
        expert=name,
        fallbacks=(),
        domain=scores.label,
        reason=f"pinned by client: {name}",
        trace=("pin",),
        out_of_scope=scores.out_of_scope,
    )


def _override(cp: CompiledPolicy, ctx: RequestContext, notes: _Notes) -> _Base | None:
    if not cp.overrides:
        return None
    insensitive, sensitive = cp.keyword_hits(ctx.text)
    for o in cp.overrides:
        hit = o.match(ctx.text, keywords_possible=sensitive if o.case_sensitive else insensitive)
        if hit is not None:
            notes.add(f"override:{o.name}", f"override '{o.name}' matched {hit!r} -> {o.expert}")
            return _Base(_dedupe([o.expert, cp.policy.fallback]), None, False, True)
    return None


def _domain(
    cp: CompiledPolicy,
    team: TeamPolicy | None,
    ctx: RequestContext,
    scores: Scores,
    notes: _Notes,
) -> _Base:
    fallback = cp.policy.fallback
    route = cp.routes.get(scores.label)
    if team is not None:
        notes.add(f"team:{ctx.team}")
    if scores.out_of_scope:
        why, rule = "out of scope", "out_of_scope"
    elif route is None:
        why, rule = f"no route for domain '{scores.label}'", "no_route"
    elif scores.confidence < route.min_confidence:
        why = (
            f"domain {scores.label} confidence {scores.confidence:.2f} < {route.min_confidence:.2f}"
        )
        rule = "low_confidence"
    else:
        notes.add(
            f"domain:{scores.label}",
            f"domain {scores.label} ({scores.confidence:.2f}) -> {route.experts[0]}",
        )
        return _Base(_dedupe([*route.experts, fallback]), route, True)
    default = cp.routes.get(team.default_route) if team and team.default_route else None
    if default is not None:
        notes.add(rule)
        notes.add(
            f"team_default_route:{default.domain}",
            f"{why} -> team {ctx.team} default route {default.domain} -> {default.experts[0]}",
        )
        return _Base(_dedupe([*default.experts, fallback]), default, False)
    notes.add(rule, f"{why} -> fallback {fallback}")
    return _Base([fallback], None, False)


def _budget(
    cp: CompiledPolicy, base: _Base, ctx: RequestContext, chain: list[str], notes: _Notes
) -> tuple[list[str], bool]:
    rule = cp.policy.budget_downgrade
    used = ctx.budget_used_fraction
    if rule is None or used is None or used < rule.used_fraction:
        return chain, False
    cheap = (base.route.cheap_expert if base.route else None) or rule.expert
    if cheap is None or cheap == chain[0]:
        return chain, False
    notes.add(
        "budget_downgrade",
        f"team budget {used:.0%} used >= {rule.used_fraction:.0%} -> cheaper {cheap}",
    )
    return _dedupe([cheap, *chain]), True


def _escalate(base: _Base, scores: Scores, chain: list[str], notes: _Notes) -> list[str]:
    tier = base.route.escalate if base.route else None
    if tier is None or scores.escalate is None or scores.escalate < tier.threshold:
        return chain
    notes.add(
        "escalate",
        f"escalate {scores.escalate:.2f} >= {tier.threshold:.2f} -> stronger {tier.expert}",
    )
    return _dedupe([tier.expert, *chain])


def _split(
    cp: CompiledPolicy, base: _Base, ctx: RequestContext, chain: list[str], notes: _Notes
) -> list[str]:
    split = cp.splits.get(base.route.domain) if base.route else None
    # Only the route's own first choice is split: escalated or downgraded plans stay as they are.
    if split is None or base.route is None or chain[0] != base.route.experts[0]:
        return chain
    total = sum(a.weight for a in split.arms)
    if total <= 0:
        return chain
    key = ctx.user or ctx.request_id or ctx.text
    point = bucket("split", split.domain, key) * total
    arm = split.arms[-1]
    for candidate in split.arms:
        point -= candidate.weight
        if point < 0:
            arm = candidate
            break
    sticky = "user" if ctx.user else "request"
    notes.add(
        f"split:{split.domain}={arm.expert}",
        f"A/B split on {split.domain} (sticky per {sticky}) -> {arm.expert}",
    )
    return _dedupe([arm.expert, *chain])


def _team_filter(
    team: TeamPolicy | None, ctx: RequestContext, chain: list[str], notes: _Notes
) -> list[str]:
    if team is None or team.allowed_experts is None:
        return chain
    allowed = set(team.allowed_experts)
    kept = [e for e in chain if e in allowed]
    removed = [e for e in chain if e not in allowed]
    if not kept:
        raise NoAllowedExpert(f"No expert in {chain} is allowed for team '{ctx.team}'.")
    if removed:
        notes.add(
            f"team_filter:{ctx.team}",
            f"not allowed for team {ctx.team}: {', '.join(removed)} -> {kept[0]}",
        )
    return kept


def _capable(
    cp: CompiledPolicy,
    team: TeamPolicy | None,
    ctx: RequestContext,
    chain: list[str],
    caps: Capabilities,
    notes: _Notes,
) -> list[str]:
    if not ctx.needs or not caps:
        return chain
    reject = ctx.is_chat and cp.policy.on_missing_capability == "reject"
    allowed = team.allowed_experts if team is not None else None
    kept, fired = restrict(chain, ctx.needs, caps, allowed=allowed, reject=reject)
    for rule, reason in fired:
        notes.add(rule, reason)
    return kept


def _why_skip(cp: CompiledPolicy, name: str, s: ExpertStats) -> str | None:
    if not s.healthy:
        return "unhealthy"
    if s.queue_full:
        return "queue full"
    slo = cp.slo_p95_ms.get(name)
    if slo is not None and s.p95_ms is not None and s.p95_ms > slo:
        return f"p95 {s.p95_ms:.0f} ms > SLO {slo:.0f} ms"
    return None


def _skip_slow(
    cp: CompiledPolicy, live: Mapping[str, ExpertStats], chain: list[str], notes: _Notes
) -> tuple[list[str], list[str]]:
    if not cp.policy.skip_slow_experts or not live:
        return chain, []
    kept: list[str] = []
    skipped: list[str] = []
    whys: list[str] = []
    for name in chain:
        why = _why_skip(cp, name, live.get(name, _HEALTHY))
        if why is None:
            kept.append(name)
        else:
            skipped.append(name)
            whys.append(f"{name} ({why})")
    if not skipped:
        return chain, []
    if not kept:
        last = cp.policy.fallback if cp.policy.fallback in chain else chain[-1]
        notes.add(
            "all_skipped",
            f"skipped {', '.join(whys)}; none left -> {last} anyway",
        )
        return [last], [s for s in skipped if s != last]
    notes.add("skip:" + ",".join(skipped), f"skipped {', '.join(whys)} -> {kept[0]}")
    return kept, skipped


def _shadow(
    cp: CompiledPolicy,
    team: TeamPolicy | None,
    scores: Scores,
    ctx: RequestContext,
    live: Mapping[str, ExpertStats],
    serving: str,
    notes: _Notes,
    caps: Capabilities,
) -> str | None:
    if not ctx.is_chat:
        return None
    key = ctx.request_id or ctx.user or ctx.text
    for sh in cp.policy.shadow:
        if sh.domains is not None and (scores.out_of_scope or scores.label not in sh.domains):
            continue
        if sh.expert == serving:
            continue
        # A copy still sends the team's prompt, so the team's allowed list applies to it too.
        if (
            team is not None
            and team.allowed_experts is not None
            and (sh.expert not in team.allowed_experts)
        ):
            continue
        s = live.get(sh.expert, _HEALTHY)
        if not s.healthy or s.queue_full:  # don't pile discarded work on a struggling expert
            continue
        if missing(sh.expert, ctx.needs, caps):  # a copy it cannot serve would only fail
            continue
        if bucket("shadow", sh.expert, key) < sh.percent / 100:
            notes.add(f"shadow:{sh.expert}", f"shadow copy ({sh.percent:g}%) -> {sh.expert}")
            return sh.expert
    return None
