"""Load a policy document: YAML -> pydantic model, every problem located as file:line:column.

Generic over the model: the router passes its composed AppConfig (classifier, experts, routing,
gateway) and a cross-check; tests pass RoutingPolicy alone.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from policies.errors import PolicyInvalid
from policies.issues import Loc, PolicyIssue, did_you_mean, has_errors
from policies.yaml_positions import Positions, parse_yaml

M = TypeVar("M", bound=BaseModel)
CrossCheck = Callable[[M], Sequence[PolicyIssue]]


@dataclass(frozen=True)
class LoadResult(Generic[M]):
    value: M | None  # None when any error was found; warnings alone don't block
    issues: tuple[PolicyIssue, ...]

    @property
    def ok(self) -> bool:
        return self.value is not None


def validate_text(
    text: str,
    model: type[M],
    *,
    file: str = "<string>",
    cross_check: CrossCheck[M] | None = None,
) -> LoadResult[M]:
    """Parse, validate and cross-check; never raises for a bad document."""
    parsed = parse_yaml(text, file)
    issues = list(parsed.issues)
    if parsed.data is None and issues:
        return LoadResult(None, tuple(issues))
    try:
        value = model.model_validate(parsed.data)
    except ValidationError as exc:
        issues += validation_issues(exc, parsed.data, model, parsed.positions, file)
        return LoadResult(None, tuple(issues))
    if cross_check is not None:
        issues += locate(cross_check(value), parsed.positions, file)
    return LoadResult(None if has_errors(issues) else value, tuple(issues))


def validate_file(
    path: str | Path, model: type[M], *, cross_check: CrossCheck[M] | None = None
) -> LoadResult[M]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return LoadResult(None, (PolicyIssue(f"cannot read the file: {exc}", file=str(p)),))
    return validate_text(text, model, file=str(p), cross_check=cross_check)


def load_text(
    text: str,
    model: type[M],
    *,
    file: str = "<string>",
    cross_check: CrossCheck[M] | None = None,
) -> M:
    """Like validate_text, but raises PolicyInvalid (carrying every issue) on errors."""
    result = validate_text(text, model, file=file, cross_check=cross_check)
    if result.value is None:
        raise PolicyInvalid(result.issues)
    return result.value


def load_file(path: str | Path, model: type[M], *, cross_check: CrossCheck[M] | None = None) -> M:
    result = validate_file(path, model, cross_check=cross_check)
    if result.value is None:
        raise PolicyInvalid(result.issues)
    return result.value


def json_schema(model: type[BaseModel], *, title: str | None = None) -> dict[str, Any]:
    """JSON Schema (2020-12) for editors: validation and autocompletion of policy files."""
    schema = model.model_json_schema(mode="validation")
    out: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    if title:
        out["title"] = title
    out.update({k: v for k, v in schema.items() if not (title and k == "title")})
    return out


def locate(issues: Sequence[PolicyIssue], positions: Positions, file: str) -> list[PolicyIssue]:
    """Fill in file, line and column of issues that know only their path."""
    out = []
    for issue in issues:
        mark = positions.find(issue.loc) if issue.line is None else None
        line, column = mark if mark is not None else (issue.line, issue.column)
        out.append(
            PolicyIssue(
                issue.message,
                loc=issue.loc,
                suggestion=issue.suggestion,
                severity=issue.severity,
                file=issue.file or file,
                line=line,
                column=column,
            )
        )
    return out


# --- pydantic errors -> issues ---------------------------------------------------------------


def validation_issues(
    exc: ValidationError, data: Any, model: type[BaseModel], positions: Positions, file: str
) -> list[PolicyIssue]:
    out: list[PolicyIssue] = []
    seen: set[tuple[Loc, str]] = set()
    for err in exc.errors(include_url=False):
        loc, branch, value = _clean_loc(tuple(err["loc"]), data)
        if branch is not None and not _branch_fits(branch, value):
            continue  # the error of a union member the input was plainly not meant for
        issue = _issue(err, loc, data, model, positions, file)
        if (issue.loc, issue.message) not in seen:
            seen.add((issue.loc, issue.message))
            out.append(issue)
    return out


_MISSING = object()


def _child(data: Any, part: str | int) -> Any:
    if isinstance(data, Mapping):
        return data.get(part, _MISSING)
    if isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
        return data[part]
    return _MISSING


def _clean_loc(loc: Loc, data: Any) -> tuple[Loc, str | None, Any]:
    """Drop the union-member tags pydantic puts in locs ('EscalationTier', 'list[str]', ...)
    so the path is one ops can find in the file. Also returns the first tag dropped and the
    input value that union was validating."""
    out: list[str | int] = []
    branch: str | None = None
    branch_value: Any = _MISSING
    current = data
    for i, part in enumerate(loc):
        child = _child(current, part)
        if child is not _MISSING:
            current = child
            out.append(part)
        elif isinstance(part, str) and (
            i < len(loc) - 1 or not isinstance(current, Mapping) or _looks_like_tag(part)
        ):
            if branch is None:
                branch, branch_value = part, current
        else:
            out.append(part)  # a missing key (the last part, under a mapping)
            current = _MISSING
    return tuple(out), branch, branch_value


_SCALAR_NAMES = frozenset({"str", "int", "float", "bool", "none", "decimal", "bytes"})
_TAG_PREFIXES = ("literal[", "constrained-", "function-", "json-or-python[")


def _looks_like_tag(part: str) -> bool:
    """A union member's name rather than a missing key (keys are snake_case field names)."""
    return (
        "[" in part
        or re.fullmatch(r"[A-Z]\w*", part) is not None
        or part in _SCALAR_NAMES
        or part.startswith(_TAG_PREFIXES)
    )


def _branch_fits(branch: str, value: Any) -> bool:
    """Whether the union member named `branch` is the one `value` was written for. Unknown tag
    shapes (validator wrappers and the like) count as fitting: better a duplicate than a loss."""
    if branch.startswith(("list[", "tuple[", "set[", "frozenset[")):
        return isinstance(value, list)
    if branch.startswith("dict[") or re.fullmatch(r"[A-Z]\w*", branch):
        return isinstance(value, Mapping)
    if branch in _SCALAR_NAMES or branch.startswith(("literal[", "constrained-")):
        return not isinstance(value, Mapping | list)
    return True


def _issue(
    err: Any, loc: Loc, data: Any, model: type[BaseModel], positions: Positions, file: str
) -> PolicyIssue:
    kind = err["type"]
    suggestion: str | None = None
    prefer_key = False
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        message = f"unknown key '{key}'"
        suggestion = _key_suggestion(key, _fields_at(model, loc[:-1]))
        prefer_key = True
    elif kind == "missing":
        message = f"missing required key '{loc[-1]}'" if loc else "missing value"
        loc_for_mark = loc[:-1]
        mark = positions.find(loc_for_mark)
        return _made(message, loc, None, mark, file)
    else:
        message = _plain_message(err)
        if kind == "literal_error":
            choices = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
            hint = did_you_mean(str(err.get("input")), choices)
            suggestion = f"did you mean '{hint}'?" if hint else None
    return _made(message, loc, suggestion, positions.find(loc, prefer_key=prefer_key), file)


def _made(
    message: str, loc: Loc, suggestion: str | None, mark: tuple[int, int] | None, file: str
) -> PolicyIssue:
    line, column = mark if mark is not None else (None, None)
    return PolicyIssue(message, loc=loc, suggestion=suggestion, file=file, line=line, column=column)


def _plain_message(err: Any) -> str:
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    value = err.get("input")
    if isinstance(value, str | int | float | bool) and err["type"] != "literal_error":
        return f"{msg} (got {value!r})"
    if err["type"] == "literal_error":
        return f"{msg} (got {value!r})"
    return msg


def _key_suggestion(key: str, fields: list[str] | None) -> str | None:
    if not fields:
        return None
    hint = did_you_mean(key, fields)
    if hint:
        return f"did you mean '{hint}'?"
    return "allowed keys: " + ", ".join(sorted(fields))


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str] | None:
    """The keys the schema allows at `loc` (for 'did you mean'), when it is a model there."""
    tp: Any = model
    for part in loc:
        tp = _step(tp, part)
        if tp is None:
            return None
    found = _as_model(tp)
    if found is None:
        return None
    return [f.alias or name for name, f in found.model_fields.items()]


def _members(tp: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(tp)
    if origin is typing.Annotated:
        return (typing.get_args(tp)[0],)
    return (tp,)


def _as_model(tp: Any) -> type[BaseModel] | None:
    for member in _members(tp):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _step(tp: Any, part: str | int) -> Any:
    for member in _members(tp):
        if isinstance(member, type) and issubclass(member, BaseModel) and isinstance(part, str):
            field = member.model_fields.get(part)
            if field is None:
                field = next((f for f in member.model_fields.values() if f.alias == part), None)
            if field is not None:
                return field.annotation
        origin = typing.get_origin(member)
        args = typing.get_args(member)
        if origin in (list, tuple, set, frozenset) and isinstance(part, int) and args:
            return args[0]
        if origin in (dict, Mapping) and isinstance(part, str) and len(args) == 2:
            return args[1]
    return None
