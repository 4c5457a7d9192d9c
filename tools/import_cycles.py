"""Import graph of the ``landscape`` package: cycles and layer violations.

Every ``import`` / ``from ... import`` statement counts, including those inside functions, and
a module importing its own package's ``__init__`` counts as an edge to that package. Cycles are
the strongly connected components with more than one module (Tarjan's algorithm).

Usage: ``python tools/import_cycles.py [ROOT] [-v]`` prints the cycles (``-v``: every edge);
exit code 1 when there is a cycle.
"""
from __future__ import annotations

import ast
import collections
import sys
from pathlib import Path


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root`` (a package folder)."""
    out = {}
    for p in sorted(root.rglob("*.py")):
        parts = p.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts)
        out[name[: -len(".__init__")] if name.endswith(".__init__") else name] = p
    return out


def _targets(current: str, path: Path, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = current.split(".")
        if path.name != "__init__.py":
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [prefix] + [f"{prefix}.{a.name}" for a in node.names]


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in the file)."""
    mods = modules(root)
    graph: dict[str, set[str]] = collections.defaultdict(set)
    for name, path in mods.items():
        graph[name]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[name].update(t for t in _targets(name, path, node) if t in mods and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("-")]
    root = Path(args[0] if args else Path(__file__).resolve().parent.parent / "landscape")
    graph = import_graph(root)
    found = cycles(graph)
    print(f"cycles: {len(found)}")
    for comp in found:
        print("  " + " <-> ".join(comp))
    if "-v" in argv:
        for m in sorted(graph):
            print(m, "->", ", ".join(sorted(graph[m])))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
