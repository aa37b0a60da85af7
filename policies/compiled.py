"""A policy prepared once per load, so the per-request path does no parsing or regex compiling."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from policies.schema import Override, Route, RoutingPolicy, Split


class ExpertInfo(Protocol):
    """What the engine reads from an expert's spec (experts.spec.ExpertSpec fits)."""

    @property
    def slo_p95_ms(self) -> float | None: ...


@dataclass(frozen=True)
class CompiledOverride:
    name: str
    expert: str
    keywords: re.Pattern[str] | None
    regex: re.Pattern[str] | None

    case_sensitive: bool = False

    def match(self, text: str, *, keywords_possible: bool = True) -> str | None:
        """What matched (for the reason), or None. `keywords_possible=False` (the policy's
        KeywordGate ruled keywords out) skips the keyword scan."""
        patterns = (self.keywords if keywords_possible else None, self.regex)
        for pattern in patterns:
            if pattern is not None:
                found = pattern.search(text)
                if found is not None:
                    return found.group(0)
        return None


def _compile_override(o: Override) -> CompiledOverride:
    flags = 0 if o.case_sensitive else re.IGNORECASE
    keywords = _keyword_pattern(o.keywords, flags)
    regex = re.compile(o.regex, flags) if o.regex is not None else None
    return CompiledOverride(o.name, o.expert, keywords, regex, o.case_sensitive)


def _keyword_pattern(keywords: Iterable[str], flags: int) -> re.Pattern[str] | None:
    words = sorted({w.strip() for w in keywords if w.strip()}, key=lambda w: (-len(w), w))
    if not words:
        return None
    # Lookarounds instead of \b, so keywords that start or end in symbols ("c++") still work.
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")(?!\w)", flags)


@dataclass(frozen=True)
class KeywordGate:
    """Rules out every keyword override with plain substring tests (C speed, ~1 us per
    keyword on a 10k-character prompt) before any boundary-aware regex runs: a regex
    alternation of 40 keywords costs ~1.5 ms on such a prompt. Substring presence is
    necessary for a match, so the gate never hides one; where lower() and re.IGNORECASE
    could disagree (non-ASCII), it answers "possible"."""

    folded: tuple[str, ...]  # lower-cased case-insensitive keywords
    exact: tuple[str, ...]  # case-sensitive keywords
    folded_ascii: bool

    @classmethod
    def build(cls, overrides: Iterable[Override]) -> KeywordGate:
        folded: set[str] = set()
        exact: set[str] = set()
        for o in overrides:
            words = {w.strip() for w in o.keywords if w.strip()}
            (exact if o.case_sensitive else folded).update(words)
        return cls(
            folded=tuple(sorted(w.lower() for w in folded)),
            exact=tuple(sorted(exact)),
            folded_ascii=all(w.isascii() for w in folded),
        )

    def possible(self, text: str) -> tuple[bool, bool]:
        """(a case-insensitive keyword may occur, a case-sensitive keyword may occur)."""
        sensitive = any(w in text for w in self.exact)
        if not self.folded:
            return False, sensitive
        if not (self.folded_ascii and text.isascii()):
            return True, sensitive
        low = text.lower()
        return any(w in low for w in self.folded), sensitive


@dataclass(frozen=True)
class CompiledPolicy:
    policy: RoutingPolicy
    # Every expert the deployment serves; pins are checked against it. None: not known here
    # (the caller checks pins itself).
    experts: frozenset[str] | None
    slo_p95_ms: Mapping[str, float]
    overrides: tuple[CompiledOverride, ...]
    routes: Mapping[str, Route]  # the first route per domain (later duplicates are unreachable)
    splits: Mapping[str, Split]  # the first split per domain
    keyword_gate: KeywordGate = KeywordGate((), (), True)

    @classmethod
    def build(
        cls,
        policy: RoutingPolicy,
        experts: Mapping[str, ExpertInfo] | Iterable[str] | None = None,
    ) -> CompiledPolicy:
        """`experts`: the deployment's expert specs by name (SLOs are read from them), or just
        their names; None when unknown (pinned names are then not checked)."""
        slos: dict[str, float] = {}
        if isinstance(experts, Mapping):
            for name, info in experts.items():
                slo = getattr(info, "slo_p95_ms", None)
                if slo is not None:
                    slos[name] = float(slo)
        routes: dict[str, Route] = {}
        for r in policy.routes:
            routes.setdefault(r.domain, r)
        splits: dict[str, Split] = {}
        for s in policy.splits:
            splits.setdefault(s.domain, s)
        return cls(
            policy=policy,
            experts=None if experts is None else frozenset(experts),
            slo_p95_ms=MappingProxyType(slos),
            overrides=tuple(_compile_override(o) for o in policy.overrides),
            routes=MappingProxyType(routes),
            splits=MappingProxyType(splits),
            keyword_gate=KeywordGate.build(policy.overrides),
        )

    def keyword_hits(self, text: str) -> tuple[bool, bool]:
        """Whether (case-insensitive, case-sensitive) keyword overrides need their scan."""
        return self.keyword_gate.possible(text)


def compile_policy(
    policy: RoutingPolicy, experts: Mapping[str, ExpertInfo] | Iterable[str] | None = None
) -> CompiledPolicy:
    return CompiledPolicy.build(policy, experts)
