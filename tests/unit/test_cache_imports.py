"""Import rules for hubget.cache (DESIGN.md): it is façade-level, so sources, transfer, layouts and the
server never import it; it reaches the façade only through ``hubget.api``'s public names (the façade
is becoming a package); and no import ring runs through it."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
LOWER_LAYERS = ("hubget.sources", "hubget.transfer", "hubget.layouts", "hubget.server")


def module_names() -> dict[str, Path]:
    out = {}
    for path in (SRC / "hubget").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(path: Path, modules: dict[str, Path], *, top_level_only: bool = False) -> set[str]:
    """hubget modules ``path`` imports (``from pkg import submodule`` counts as the submodule)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(node.module)
    return {m for m in found if m in modules}


def test_lower_layers_do_not_import_the_cache_package() -> None:
    modules = module_names()
    offenders = [
        (name, dep)
        for name, path in modules.items()
        if name.startswith(LOWER_LAYERS)
        for dep in imports_of(path, modules)
        if dep == "hubget.cache" or dep.startswith("hubget.cache.")
    ]
    assert offenders == []


def test_the_cache_package_uses_the_facade_by_its_public_names_only() -> None:
    modules = module_names()
    for name, path in modules.items():
        if not (name == "hubget.cache" or name.startswith("hubget.cache.")):
            continue
        for dep in imports_of(path, modules):
            assert not dep.startswith(("hubget.cli", "hubget.server", "hubget.integrations")), (name, dep)
            assert not dep.startswith("hubget.api."), (name, dep)  # hubget.api is becoming a package


def test_no_import_ring_through_the_cache_package() -> None:
    modules = module_names()
    graph = {name: imports_of(path, modules) - {name} for name, path in modules.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            for nxt in graph.get(node, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    rings = [
        (name, dep)
        for name in graph
        if name.startswith("hubget.cache")
        for dep in graph[name]
        if dep != "hubget.cache" and reaches(dep, name)
    ]
    assert rings == []


def test_no_top_level_import_ring_anywhere() -> None:
    modules = module_names()
    graph = {name: imports_of(path, modules, top_level_only=True) - {name} for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*trail, node, nxt]
            if nxt not in state and (ring := visit(nxt, [*trail, node])):
                return ring
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            assert visit(name, []) is None
