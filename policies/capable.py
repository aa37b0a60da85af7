"""Capability-aware routing, pure: which experts of a chain can honour what a request needs.

A request's needs are capability names (the experts' vocabulary: "chat", "tools",
"json_object", "json_schema", "logprobs", "vision", "embeddings"), computed by the router from
the request; each expert's capabilities are the names it has, derived by its backend and
overridden in the YAML. Policies never import experts: both sides are plain strings here.

An expert whose capabilities are not known (absent from the mapping) stays in a chain (its
upstream is then the judge and answers an error, never a silent downgrade) but is never
chosen from the pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from policies.errors import MissingCapability

# The capability names in the order reasons and errors list them.
ORDER = ("chat", "tools", "json_object", "json_schema", "logprobs", "vision", "embeddings")
# The request field that asks for each capability: the `param` of a 400 naming it.
ASKED_BY = {
    "chat": "model",
    "tools": "tools",
    "json_object": "response_format",
    "json_schema": "response_format",
    "logprobs": "logprobs",
    "vision": "messages",
    "embeddings": "model",
}
Capabilities = Mapping[str, frozenset[str]]  # expert -> what it can do, in pool order


def _ordered(names: Iterable[str]) -> tuple[str, ...]:
    wanted = set(names)
    return tuple(n for n in ORDER if n in wanted) + tuple(sorted(wanted - set(ORDER)))


def missing(expert: str, needs: frozenset[str], caps: Capabilities) -> tuple[str, ...]:
    """What `expert` lacks of `needs` (empty: it can serve, or its capabilities are unknown)."""
    have = caps.get(expert)
    if have is None:
        return ()
    return _ordered(needs - have)


@dataclass(frozen=True)
class Filtered:
    kept: tuple[str, ...]
    skipped: tuple[tuple[str, tuple[str, ...]], ...]  # (expert, what it lacks), chain order

    def reason(self) -> str:
        """`needs tools -> skipped smollm2`; experts lacking the same things are grouped."""
        groups: dict[tuple[str, ...], list[str]] = {}
        for name, lacks in self.skipped:
            groups.setdefault(lacks, []).append(name)
        return "; ".join(
            f"needs {', '.join(lacks)} -> skipped {', '.join(names)}"
            for lacks, names in groups.items()
        )


def filter_chain(chain: Sequence[str], needs: frozenset[str], caps: Capabilities) -> Filtered:
    kept: list[str] = []
    skipped: list[tuple[str, tuple[str, ...]]] = []
    for name in chain:
        lacks = missing(name, needs, caps)
        if lacks:
            skipped.append((name, lacks))
        else:
            kept.append(name)
    return Filtered(tuple(kept), tuple(skipped))


def capable_pool(
    needs: frozenset[str], caps: Capabilities, allowed: Iterable[str] | None = None
) -> tuple[str, ...]:
    """Every expert known to have all of `needs` (and allowed, if a list is given), in the
    mapping's order (the policy file's)."""
    permitted = None if allowed is None else set(allowed)
    return tuple(
        name
        for name, have in caps.items()
        if needs <= have and (permitted is None or name in permitted)
    )


def refuse_pin(expert: str, lacks: Sequence[str]) -> MissingCapability:
    return MissingCapability(
        f"The model '{expert}' cannot serve this request: it needs {', '.join(lacks)}, which "
        f"'{expert}' does not support. Use model 'auto', or a model that supports it "
        "(GET /v1/models lists each model's capabilities).",
        missing=lacks,
        param=ASKED_BY.get(lacks[0], "model"),
    )


def refuse_all(needs: frozenset[str], filtered: Filtered, caps: Capabilities) -> MissingCapability:
    """No expert the request may use can serve it: 400 naming what is missing."""
    lacking = _ordered({n for _, lacks in filtered.skipped for n in lacks} or needs - {"chat"})
    tried = ", ".join(name for name, _ in filtered.skipped) or "none"
    offered = ", ".join(name for name, have in caps.items() if needs <= have)
    hint = f" Experts with it (not on this request's route): {offered}." if offered else ""
    return MissingCapability(
        f"No expert can serve this request: it needs {', '.join(lacking)} (routed experts "
        f"lacking it: {tried}).{hint}",
        missing=lacking,
        param=ASKED_BY.get(lacking[0], "model") if lacking else "model",
    )


def restrict(
    chain: Sequence[str],
    needs: frozenset[str],
    caps: Capabilities,
    *,
    allowed: Iterable[str] | None = None,
    reject: bool = False,
) -> tuple[list[str], list[tuple[str, str]]]:
    """The chain without experts lacking `needs`, and the (trace entry, reason) pairs that
    fired. Nothing left: the pool's capable experts the team may use (`reject`: a 400)."""
    filtered = filter_chain(chain, needs, caps)
    fired: list[tuple[str, str]] = []
    if filtered.skipped:
        lacking = _ordered({n for _, lacks in filtered.skipped for n in lacks})
        fired.append(("needs:" + ",".join(lacking), filtered.reason()))
    if filtered.kept:
        return list(filtered.kept), fired
    pool = () if reject else capable_pool(needs, caps, allowed)
    if not pool:
        raise refuse_all(needs, filtered, caps)
    wanted = ", ".join(_ordered(needs - {"chat"})) or "chat"
    fired.append(("capable_pool", f"first expert with {wanted} -> {pool[0]}"))
    return list(pool), fired
