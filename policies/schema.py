"""The routing part of the policy YAML (pydantic, unknown keys rejected)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EscalationTier(_Strict):
    threshold: float = Field(..., ge=0, le=1)
    expert: str


class Route(_Strict):
    domain: str
    experts: list[str] = Field(
        ..., min_length=1, description="Ordered: first choice, then fallbacks."
    )
    min_confidence: float = Field(0.0, ge=0, le=1)
    escalate: EscalationTier | None = None
    cheap_expert: str | None = Field(
        None, description="Used when the team is over its budget threshold."
    )
    description: str = ""
    examples: list[str] = Field(
        default_factory=list, description="Utterances for zero-training classifiers."
    )


class Override(_Strict):
    """Send prompts matching a keyword list or regex straight to an expert."""

    name: str
    expert: str
    keywords: list[str] = Field(
        default_factory=list, description="Whole words or phrases; any one matches."
    )
    regex: str | None = Field(None, description="Python regex, searched anywhere in the prompt.")
    case_sensitive: bool = False

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regex: {exc}") from None
        return value


class TeamPolicy(_Strict):
    allowed_experts: list[str] | None = Field(
        None, description="Only these experts ever answer this team (None: all)."
    )
    default_route: str | None = Field(
        None,
        description="Domain whose route this team gets instead of the fallback "
        "(out of scope, low confidence, no route).",
    )
    allow_pinning: bool | None = Field(None, description="Overrides the policy's allow_pinning.")


class SplitArm(_Strict):
    expert: str
    weight: float = Field(..., ge=0, le=1)


class Split(_Strict):
    """A/B test on one domain's first choice, sticky per user."""

    domain: str
    arms: list[SplitArm] = Field(..., min_length=2)


class Shadow(_Strict):
    expert: str
    percent: float = Field(..., ge=0, le=100)
    domains: list[str] | None = None


class BudgetDowngrade(_Strict):
    used_fraction: float = Field(0.8, ge=0, le=1)
    expert: str | None = Field(
        None, description="Cheap expert for routes without their own cheap_expert."
    )


class RoutingPolicy(_Strict):
    fallback: str = Field(
        ..., description="Generalist for out-of-scope and low-confidence prompts."
    )
    allow_pinning: bool = True
    on_disallowed_pin: Literal["reject", "ignore"] = Field(
        "reject", description="reject: 400 when pinning is not allowed; ignore: route as auto."
    )
    auto_when_model_omitted: bool = True
    routes: list[Route] = Field(default_factory=list)
    overrides: list[Override] = Field(default_factory=list)
    teams: dict[str, TeamPolicy] = Field(default_factory=dict)
    splits: list[Split] = Field(default_factory=list)
    shadow: list[Shadow] = Field(default_factory=list)
    budget_downgrade: BudgetDowngrade | None = None
    skip_slow_experts: bool = True
    on_missing_capability: Literal["any_capable", "reject"] = Field(
        "any_capable",
        description="A request needing what no expert of its chain can do (tools, "
        "json_schema, logprobs, images): any_capable sends it to the first expert of the file "
        "that can (and the team may use); reject answers 400 naming the missing capability.",
    )

    def route_for(self, domain: str) -> Route | None:
        return next((r for r in self.routes if r.domain == domain), None)

    def referenced_experts(self) -> set[str]:
        names = {self.fallback}
        for r in self.routes:
            names.update(r.experts)
            if r.escalate:
                names.add(r.escalate.expert)
            if r.cheap_expert:
                names.add(r.cheap_expert)
        names.update(o.expert for o in self.overrides)
        names.update(a.expert for s in self.splits for a in s.arms)
        names.update(s.expert for s in self.shadow)
        if self.budget_downgrade and self.budget_downgrade.expert:
            names.add(self.budget_downgrade.expert)
        for team in self.teams.values():
            names.update(team.allowed_experts or ())
        return names
