"""The package's import graph, read from source (nothing is imported): cycles, layers, local imports.

Every ``import``/``from ... import`` of a ``spectre`` module counts, wherever it sits (module top,
function body, ``if TYPE_CHECKING`` excluded), so a cycle cannot hide behind a function-local import.
``python scripts/import_graph.py`` prints the cycles and the function-local package imports;
tests/test_architecture.py asserts on the same graph.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking(node: ast.AST) -> bool:
    t = node.test if isinstance(node, ast.If) else None
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports(path: Path, modules: set[str], src: Path = SRC) -> list[tuple[str, int, bool]]:
    """[(imported spectre module, line, function-local)] for one file."""
    mod = module_name(path, src)
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[str, int, bool]] = []

    def target(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                continue
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for a in child.names:
                    t = target(a.name)
                    if t:
                        out.append((t, child.lineno, local))
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(mod, is_pkg, child)
                for a in child.names:  # `from . import x` may name a submodule
                    t = target(f"{base}.{a.name}") if f"{base}.{a.name}" in modules else target(base)
                    if t:
                        out.append((t, child.lineno, local))
            visit(child, inner)

    visit(tree, False)
    return out


def graph(src: Path = SRC) -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """({module: imported modules}, [(module, imported, line) function-local])."""
    files = {module_name(p, src): p for p in sorted((src / "spectre").rglob("*.py"))}
    modules = set(files)
    edges: dict[str, set[str]] = {m: set() for m in modules}
    local = []
    for m, p in files.items():
        for t, line, is_local in imports(p, modules, src):
            # a package importing its own submodules (re-exports) and a module importing its own
            # package's __init__ are the packaging mechanism, not a dependency between concepts
            if t == m or t.startswith(m + ".") or (m.startswith(t + ".") and files[t].name == "__init__.py"):
                continue
            edges[m].add(t)
            if is_local and (m, t, line) not in local:
                local.append((m, t, line))
    return edges, local


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
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

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--local", action="store_true", help="list every function-local package import")
    args = ap.parse_args(argv)
    edges, local = graph()
    cyc = cycles(edges)
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} edges, "
          f"{len(local)} function-local package imports in {len({m for m, _, _ in local})} modules, "
          f"{len(cyc)} cycles")
    for c in cyc:
        print("cycle:", " <-> ".join(c))
    if args.local:
        for m, t, line in local:
            print(f"local: {m}:{line} -> {t}")
    return 1 if cyc else 0


if __name__ == "__main__":
    sys.exit(main())
