"""The house rules, checked on the source: which package may import which, no import circles, and
no file too big to read in one sitting (docs/ARCHITECTURE.md, "Packages and their direction").

Imports are read with `ast` (no module is imported): every `import` and `from ... import`
counts, at module level or inside a function, under TYPE_CHECKING or not.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("router", "experts", "classifiers", "policies", "loadtest")
LEAVES = ("experts", "classifiers", "policies")
MAX_LINES = 450
# Inside router/: a sub-package may import only those below it.
ROUTER_LAYERS = {
    "router.ops": 4,
    "router.serving": 3,
    "router.continuous": 2,
    "router.finance": 1,
}
# Files and circles tolerated for now (the tests below fail on a stale entry).
TOO_LONG_KNOWN: set[str] = set()
CIRCLES_KNOWN: list[list[str]] = []


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {
        _module_name(p): p
        for pkg in PACKAGES
        for p in sorted((ROOT / pkg).rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def _imported(tree: ast.Module, module: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """The modules of ours `module` imports: `from a.b import c` names a.b.c when that is a
    module, else a.b; relative imports are resolved against `module`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield full if full in known else base


def _graph() -> dict[str, set[str]]:
    sources = _sources()
    known = set(sources)
    graph: dict[str, set[str]] = {}
    for name, path in sources.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found = _imported(tree, name, path.name == "__init__.py", known)
        graph[name] = {m for m in found if m.split(".")[0] in PACKAGES and m != name}
    return graph


def _top(module: str) -> str:
    return module.split(".")[0]


def _layer(module: str) -> tuple[str, int] | None:
    for prefix, rank in ROUTER_LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return prefix, rank
    return None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles() -> None:
    circles = _cycles(_graph())
    assert [c for c in circles if c not in CIRCLES_KNOWN] == []
    stale = [c for c in CIRCLES_KNOWN if c not in circles]
    assert not stale, f"{stale} is no circle now: take it off CIRCLES_KNOWN"


def test_leaves_import_only_themselves() -> None:
    bad = [
        f"{m} -> {dep}"
        for m, deps in _graph().items()
        if _top(m) in LEAVES
        for dep in deps
        if _top(dep) != _top(m)
    ]
    assert bad == []


def test_loadtest_imports_none_of_ours() -> None:
    bad = [
        f"{m} -> {dep}"
        for m, deps in _graph().items()
        if _top(m) == "loadtest"
        for dep in deps
        if _top(dep) != "loadtest"
    ]
    assert bad == []


def test_router_sub_packages_import_only_downwards() -> None:
    """ops -> serving -> continuous -> finance -> (router.config, router.errors) -> leaves."""
    bad = []
    for m, deps in _graph().items():
        mine = _layer(m)
        for dep in deps:
            theirs = _layer(dep)
            if mine is not None and theirs is not None and theirs[1] > mine[1]:
                bad.append(f"{m} -> {dep}")
            # The bottom imports no sub-package but the policy sections config composes.
            bottom = m in ("router.config", "router.errors")
            if bottom and theirs is not None and dep != "router.continuous.spec":
                bad.append(f"{m} -> {dep}")
            if m != "router" and dep == "router":  # the façade is for users, not for us
                bad.append(f"{m} -> {dep}")
    assert bad == []


def test_the_sub_packages_exist() -> None:
    for name in ("serving", "serving/http", "finance", "continuous", "ops"):
        assert (ROOT / "router" / name / "__init__.py").is_file(), name
    for name in ("config.py", "errors.py", "continuous/spec.py", "finance/static"):
        assert (ROOT / "router" / name).exists(), name


def test_no_source_file_is_too_long() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in _sources().values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert {k: v for k, v in long.items() if k not in TOO_LONG_KNOWN} == {}
    stale = TOO_LONG_KNOWN - set(long)
    assert not stale, f"{stale} is short now: take it off TOO_LONG_KNOWN"
