"""The package's import graph: its layers, its cycles and the private names one module takes from another.

    python eval/import_graph.py            # a summary: modules, layers, cycles, private imports
    python eval/import_graph.py --layers   # every module with its layer

Read from the source with ``ast`` (nothing is imported), counting every ``import`` / ``from ... import``
of a ``diti_sd`` module, also those inside functions (a deferred import is still a dependency); a name
imported from a package's ``__init__`` that re-exports it counts as imported from its own module. A
module's layer is 0 when it imports no other module of the package, else one more than the highest
layer it imports; modules on a cycle share one layer. Exit status 1 when there is a cycle or a private
import, so a test can hold the package to neither.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = "diti_sd"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a relative import ``from {'.' * level}{target} import ...`` inside ``module``."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def _reexports(modules: dict[str, Path]) -> dict[str, dict[str, str]]:
    """package -> {name its ``__init__`` re-exports -> the submodule that defines it}."""
    out: dict[str, dict[str, str]] = {}
    for name, path in modules.items():
        if path.name != "__init__.py":
            continue
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.ImportFrom) and node.level:
                source = _resolve(name, True, node.level, node.module)
                if source in modules and source.startswith(name + "."):
                    out.setdefault(name, {}).update({a.asname or a.name: source for a in node.names})
    return out


def imports(root: Path = ROOT) -> dict[str, dict[str, set[str]]]:
    """module -> {imported module -> names taken from it (empty for ``import x``)}. A name taken from a
    package that only re-exports it counts as taken from the submodule that defines it."""
    modules = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    reexports = _reexports(modules)
    graph: dict[str, dict[str, set[str]]] = {m: {} for m in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(name, is_package, node.level, node.module) if node.level else node.module or ""
                for alias in node.names:
                    # ``from . import x`` / ``from .pkg import sub``: a submodule, not a name
                    full = f"{target}.{alias.name}"
                    if full in modules:
                        graph[name].setdefault(full, set())
                    elif target in modules:
                        source = reexports.get(target, {}).get(alias.name, target)
                        graph[name].setdefault(source, set()).add(alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        graph[name].setdefault(alias.name, set())
    for name in graph:
        graph[name].pop(name, None)
        # a package's own __init__ is imported with any of its submodules; it is not a dependency choice
        graph[name] = {m: n for m, n in graph[name].items() if not (name.startswith(m + ".") and not n)}
    return graph


def cycles(graph: dict[str, dict]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
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

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def layers(graph: dict[str, dict]) -> dict[str, int]:
    """Each module's layer (0: imports nothing of the package); a cycle's members share one."""
    comp_of = {m: tuple(c) for c in cycles(graph) for m in c}
    layer: dict[str, int] = {}

    def depth(v, seen=()):
        if v in layer:
            return layer[v]
        group = comp_of.get(v, (v,))
        deps = {w for m in group for w in graph[m]} - set(group)
        value = 1 + max((depth(w, (*seen, v)) for w in deps), default=-1)
        for m in group:
            layer[m] = value
        return value

    for v in graph:
        depth(v)
    return layer


def private_imports(graph: dict[str, dict[str, set[str]]]) -> list[str]:
    """``a -> b._name``: a module taking a private name from another module, or importing a private module
    that is not its own package's."""
    out = []
    for a, deps in graph.items():
        for b, names in deps.items():
            own = a.rsplit(".", 1)[0] == b.rsplit(".", 1)[0] or b.startswith(a + ".")
            if b.rsplit(".", 1)[-1].startswith("_") and not b.endswith("__init__") and not own:
                out.append(f"{a} -> {b}")
            out += [f"{a} -> {b}.{n}" for n in sorted(names) if n.startswith("_") and not n.startswith("__")]
    return sorted(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", action="store_true", help="list every module with its layer")
    parser.add_argument("--root", default=str(ROOT), help="the package folder (default: this checkout's)")
    args = parser.parse_args(argv)
    graph = imports(Path(args.root))
    layer, found, private = layers(graph), cycles(graph), private_imports(graph)
    print(f"{len(graph)} modules, {max(layer.values()) + 1} layers (0 .. {max(layer.values())})")
    if args.layers:
        for m in sorted(graph, key=lambda m: (layer[m], m)):
            print(f"  {layer[m]:2d}  {m}")
    print(f"cycles: {len(found)}" + "".join(f"\n  {' <-> '.join(c)}" for c in found))
    print(f"private imports across modules: {len(private)}" + "".join(f"\n  {p}" for p in private))
    return 1 if found or private else 0


if __name__ == "__main__":
    sys.exit(main())
