"""The architecture, enforced: every import under src/sturdynet (module level and inside
functions) is parsed, and the package-level import graph must obey the rules of
docs/design.md:

- no import cycle between packages;
- core/ imports no other sturdynet package;
- no library module imports cli/;
- report/ imports nothing but core/;
- algorithm packages (data, models, quant, prune, attacks, faults, corruptions, certify)
  never import checks/, defenses/, run/ or train/.

Each rule is also run against a deliberately broken graph, so a rule that can never fire
fails here.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
ROOT = "sturdynet"
ALGORITHMS = ("data", "models", "quant", "prune", "attacks", "faults", "corruptions", "certify")
DRIVERS = ("checks", "defenses", "run", "train")
#: the package of a top-level module (sturdynet/api.py is the user facade, sturdynet/__main__ the entry point)
FACADES = ("__init__", "__main__", "api")

Edge = Tuple[str, str, str]  # (from package, to package, "file:line")


def _module_name(path: Path, src: Path) -> Tuple[str, bool]:
    parts = list(path.relative_to(src).with_suffix("").parts)
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    return ".".join(parts), is_pkg


def _package(module: str) -> str:
    """``sturdynet.quant.binary.ste`` -> ``quant``; top-level modules map to their own name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path, src: Path = SRC) -> List[Tuple[str, int]]:
    """Every sturdynet module imported by ``path`` (absolute names), with line numbers."""
    module, is_pkg = _module_name(path, src)
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == ROOT]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != ROOT:
                continue
            if node.module is None or target == ROOT:  # `from . import a, b`: the submodules themselves
                out += [(f"{target}.{a.name}", node.lineno) for a in node.names]
            else:
                out.append((target, node.lineno))
    return out


def package_edges(src: Path = SRC) -> List[Edge]:
    edges = []
    for path in sorted((src / ROOT).rglob("*.py")):
        module, _ = _module_name(path, src)
        here = _package(module)
        for target, line in imports_of(path, src):
            there = _package(target)
            if there != here:
                edges.append((here, there, f"{path.relative_to(src)}:{line}"))
    return edges


def cycles(edges: List[Edge]) -> List[List[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    graph: Dict[str, Set[str]] = defaultdict(set)
    for a, b, _ in edges:
        if a not in FACADES and b not in FACADES:
            graph[a].add(b)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def violations(edges: List[Edge]) -> List[str]:
    """Every broken rule, one line each."""
    bad = [f"import cycle between packages: {' <-> '.join(c)}" for c in cycles(edges)]
    for a, b, where in edges:
        if a == "core":
            bad.append(f"{where}: core/ imports {b}/ (core imports no family)")
        if b == "cli" and a != "__main__":
            bad.append(f"{where}: {a} imports cli/ (nothing in the library imports the command line)")
        if a == "report" and b != "core":
            bad.append(f"{where}: report/ imports {b}/ (reports are rendered from results.json, core/ only)")
        if a in ALGORITHMS and b in DRIVERS:
            bad.append(f"{where}: algorithm package {a}/ imports {b}/")
    return bad


def test_source_tree_obeys_the_architecture():
    edges = package_edges()
    assert edges, "no imports parsed: the test is not looking at the source tree"
    assert violations(edges) == []


def test_every_package_is_classified():
    """A new top-level package must be placed in the rules (algorithm, driver, or one of the rest)."""
    known = set(ALGORITHMS) | set(DRIVERS) | {"core", "export", "report", "cli", "recipes"}  # recipes: YAML only
    found = {p.name for p in (SRC / ROOT).iterdir() if (p / "__init__.py").is_file()}
    assert found - known == set(), f"unclassified packages: {sorted(found - known)}"


def test_function_level_imports_are_seen(tmp_path):
    pkg = tmp_path / ROOT / "core"
    pkg.mkdir(parents=True)
    (tmp_path / ROOT / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "x.py").write_text("def f():\n    from ..checks import base\n    return base\n")
    edges = package_edges(tmp_path)
    assert ("core", "checks") in {(a, b) for a, b, _ in edges}


@pytest.mark.parametrize("extra, expect", [
    (("core", "quant", "core/x.py:1"), "core/ imports quant/"),
    (("quant", "cli", "quant/x.py:1"), "imports cli/"),
    (("report", "run", "report/x.py:1"), "report/ imports run/"),
    (("prune", "checks", "prune/x.py:1"), "algorithm package prune/ imports checks/"),
    (("faults", "run", "faults/x.py:1"), "algorithm package faults/ imports run/"),
    (("data", "checks", "data/x.py:1"), "import cycle"),  # checks already imports data
])
def test_a_deliberate_violation_is_caught(extra, expect):
    edges = package_edges() + [extra]
    assert any(expect in v for v in violations(edges)), violations(edges)
