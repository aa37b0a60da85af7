"""One problem found in a policy document, located for humans (file:line:column and a path)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

Loc = tuple[str | int, ...]
Severity = Literal["error", "warning"]


def format_path(loc: Loc) -> str:
    """('routing', 'routes', 2, 'experts', 0) -> 'routing.routes[2].experts[0]'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The closest known name, when one is close enough to be a typo."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return close[0] if close else None


@dataclass(frozen=True)
class PolicyIssue:
    message: str
    loc: Loc = ()
    suggestion: str | None = None
    severity: Severity = "error"
    file: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based

    @property
    def path(self) -> str:
        return format_path(self.loc)

    def under(self, *prefix: str | int) -> PolicyIssue:
        """The same issue with its path nested under `prefix` (a part inside the document)."""
        return replace(self, loc=(*prefix, *self.loc))

    def where(self) -> str:
        parts = [self.file or "<policy>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        text = f"{self.where()}: {self.severity}: "
        if self.loc:
            text += f"{self.path}: "
        text += self.message
        if self.suggestion:
            text += f"; {self.suggestion}"
        return text

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "suggestion": self.suggestion,
            "severity": self.severity,
        }


def has_errors(issues: Sequence[PolicyIssue]) -> bool:
    return any(i.severity == "error" for i in issues)


def format_issues(issues: Sequence[PolicyIssue]) -> str:
    """One line per issue, errors first, in document order; then a count. For the CLI."""
    if not issues:
        return "ok: no problems found"
    ordered = sorted(
        issues,
        key=lambda i: (i.severity != "error", i.file or "", i.line or 0, i.column or 0),
    )
    errors = sum(1 for i in issues if i.severity == "error")
    warnings = len(issues) - errors
    lines = [str(i) for i in ordered]
    lines.append(f"{errors} error(s), {warnings} warning(s)")
    return "\n".join(lines)
