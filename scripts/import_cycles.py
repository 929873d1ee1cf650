"""Report import cycles inside the fpliif package (reads the source with ``ast``; imports nothing of it).

    python scripts/import_cycles.py            # module-level imports (what runs at import time)
    python scripts/import_cycles.py --lazy     # also imports inside functions (deferred imports)

An edge A -> B means module A imports B (``import B``, ``from B import x``, ``from . import B``); importing a
submodule also runs its packages' ``__init__``, so those are edges too. Imports under ``if TYPE_CHECKING:`` never
run and are left out. Prints each cycle (a strongly connected component of two or more modules) and exits 1 if
there is any, so ``--lazy`` also fails on a cycle that only runs when a function is called.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "fpliif"


def module_files(src: Path = SRC, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of ``package`` under ``src``."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _statements(tree: ast.Module, lazy: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements at module level (not under ``if TYPE_CHECKING``); all of them with ``lazy``."""
    if lazy:
        yield from (n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)))
        return
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            stack.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            stack.extend(node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body])


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Modules of ``known`` that one import statement in ``module`` names."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    base = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    base = ".".join(p for p in (base if node.level else "", node.module or "") if p)
    return {base} | {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}


def _with_packages(name: str, known: set[str]) -> set[str]:
    """``name`` and the packages whose ``__init__`` importing it runs (those of ``known``)."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & known


def import_graph(lazy: bool = False, src: Path = SRC, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (module level, or everywhere with ``lazy``)."""
    files = module_files(src, package)
    known = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        edges: set[str] = set()
        for node in _statements(tree, lazy):
            for target in _targets(node, name, path.name == "__init__.py", known):
                edges |= _with_packages(target, known)
        own_packages = _with_packages(name, known) - {name}
        graph[name] = edges - own_packages - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of two or more modules (Tarjan's algorithm), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lazy", action="store_true", help="count imports inside functions too (and fail on them)")
    ap.add_argument("--src", type=Path, default=SRC, help="the folder holding the package (default: src/)")
    ap.add_argument("--package", default=PACKAGE, help=f"the package to read (default: {PACKAGE})")
    args = ap.parse_args(argv)
    if not (args.src / args.package).is_dir():
        ap.error(f"--src/--package: {args.src / args.package} is not a folder")
    graph = import_graph(lazy=args.lazy, src=args.src, package=args.package)
    found = cycles(graph)
    kind = "all imports" if args.lazy else "module-level imports"
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} edges ({kind}): {len(found)} cycle(s)")
    for component in found:
        print("  " + " <-> ".join(component))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
