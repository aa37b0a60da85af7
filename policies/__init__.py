"""policies: the routing-policy schema and the pure decision engine.

The loader (policies.loader), cross-checks (policies.checks) and simulation helpers
(policies.simulate) are imported from their modules: the gateway's hot path needs only these.
"""

from policies.compiled import CompiledPolicy, compile_policy
from policies.engine import decide
from policies.errors import (
    MissingCapability,
    ModelNotAllowed,
    ModelNotFound,
    NoAllowedExpert,
    PinningNotAllowed,
    PolicyError,
    PolicyInvalid,
)
from policies.schema import (
    BudgetDowngrade,
    EscalationTier,
    Override,
    Route,
    RoutingPolicy,
    Shadow,
    Split,
    SplitArm,
    TeamPolicy,
)
from policies.types import ExpertStats, RequestContext, RoutePlan, Scores

__all__ = [
    "BudgetDowngrade",
    "CompiledPolicy",
    "EscalationTier",
    "ExpertStats",
    "MissingCapability",
    "ModelNotAllowed",
    "ModelNotFound",
    "NoAllowedExpert",
    "Override",
    "PinningNotAllowed",
    "PolicyError",
    "PolicyInvalid",
    "RequestContext",
    "Route",
    "RoutePlan",
    "RoutingPolicy",
    "Scores",
    "Shadow",
    "Split",
    "SplitArm",
    "TeamPolicy",
    "compile_policy",
    "decide",
]
