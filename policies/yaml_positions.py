"""YAML text -> plain data plus the line:column of every key and value, for located errors."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from policies.issues import Loc, PolicyIssue

Mark = tuple[int, int]  # 1-based line, column
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Positions:
    values: Mapping[Loc, Mark]
    keys: Mapping[Loc, Mark]

    def find(self, loc: Loc, *, prefer_key: bool = False) -> Mark | None:
        """The mark of `loc`, else of its nearest ancestor present in the document."""
        if prefer_key and loc in self.keys:
            return self.keys[loc]
        for end in range(len(loc), -1, -1):
            mark = self.values.get(loc[:end])
            if mark is not None:
                return mark
        return None


@dataclass(frozen=True)
class ParsedYaml:
    data: Any
    positions: Positions
    issues: tuple[PolicyIssue, ...]  # duplicate keys: PyYAML would silently keep the last


def _mark(m: yaml.Mark) -> Mark:
    return (m.line + 1, m.column + 1)


class _Walker:
    def __init__(self, loader: yaml.SafeLoader, file: str) -> None:
        self.loader = loader
        self.file = file
        self.values: dict[Loc, Mark] = {}
        self.keys: dict[Loc, Mark] = {}
        self.issues: list[PolicyIssue] = []
        # Nodes already walked: an alias is not walked again, which ends recursive aliases and
        # keeps "billion laughs" documents linear (errors under an alias point at the alias).
        self._walked: set[int] = set()

    def walk(self, node: yaml.Node, loc: Loc) -> None:
        self.values.setdefault(loc, _mark(node.start_mark))
        if id(node) in self._walked:
            return
        self._walked.add(id(node))
        if isinstance(node, yaml.MappingNode):
            self._mapping(node, loc)
        elif isinstance(node, yaml.SequenceNode):
            for i, child in enumerate(node.value):
                self.walk(child, (*loc, i))

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> None:
        seen: dict[Hashable, Mark] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.loader.construct_object(key_node)
            if not isinstance(key, str | int):
                key = str(key)
            here = _mark(key_node.start_mark)
            if key in seen:
                first = seen[key]
                self.issues.append(
                    PolicyIssue(
                        f"duplicate key '{key}' (first at line {first[0]}); "
                        "the later value would silently win",
                        loc=(*loc, key),
                        file=self.file,
                        line=here[0],
                        column=here[1],
                    )
                )
                continue
            seen[key] = here
            self.keys[(*loc, key)] = here
            if not isinstance(value_node, yaml.ScalarNode):
                # A block list or mapping starts on the line after its key; ops look for the key.
                self.values[(*loc, key)] = here
            self.walk(value_node, (*loc, key))


def syntax_issue(exc: yaml.YAMLError, file: str) -> PolicyIssue:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    line, column = _mark(mark) if mark is not None else (None, None)
    return PolicyIssue(message, file=file, line=line, column=column)


def _reader_issue(text: str, exc: yaml.reader.ReaderError, file: str) -> PolicyIssue:
    pos = exc.position
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    char = exc.character if isinstance(exc.character, int) else ord(exc.character)
    message = f"invalid YAML: unacceptable character #x{char:04x}: {exc.reason}"
    return PolicyIssue(message, file=file, line=line, column=column)


def parse_yaml(text: str, file: str = "<string>") -> ParsedYaml:
    """Parse one YAML document. Syntax errors come back as issues, never as exceptions."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # control characters are refused before parsing
        return ParsedYaml(None, Positions({}, {}), (_reader_issue(text, exc, file),))
    try:
        node = loader.get_single_node()
        if node is None:
            empty = PolicyIssue("the document is empty", file=file, line=1, column=1)
            return ParsedYaml(None, Positions({}, {}), (empty,))
        walker = _Walker(loader, file)
        walker.walk(node, ())
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        return ParsedYaml(None, Positions({}, {}), (syntax_issue(exc, file),))
    except RecursionError:  # pyyaml recurses once per nesting level
        deep = PolicyIssue("invalid YAML: nested too deeply", file=file, line=1, column=1)
        return ParsedYaml(None, Positions({}, {}), (deep,))
    finally:
        loader.dispose()
    return ParsedYaml(data, Positions(walker.values, walker.keys), tuple(walker.issues))
