"""The package keeps the shape shared/DESIGN.md gives it: no import circles, layers that import only
downwards, small modules. Read from the source with ``ast`` (imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
MAX_LINES = 700

# layer -> the layers it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "sources": ("layouts", "api", "cli", "server", "integrations", "gitclone", "cache", "objectstore"),
    "transfer": (
        "sources",
        "layouts",
        "api",
        "cli",
        "server",
        "integrations",
        "gitclone",
        "cache",
        "objectstore",
    ),
    "layouts": ("sources", "api", "cli", "server", "integrations", "gitclone", "cache", "objectstore"),
    # The S3 client, manifests and the streaming uploader: base modules and transfer only.
    "objectstore": ("sources", "layouts", "api", "cli", "server", "integrations", "gitclone", "cache"),
    "server": ("cli", "api", "integrations", "gitclone", "cache"),
    "api": ("cli", "server"),
    "integrations": ("cli", "server"),
    "gitclone": ("cli", "server", "api", "objectstore"),
}
# Plain modules at the top of the package are shared by every layer and import none of the layers.
BASE_MODULES = (
    "config",
    "errors",
    "models",
    "paths",
    "hashing",
    "filters",
    "lfsrules",
    "folderfiles",
    "atomicfile",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "hubget").rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``name`` imports (``from pkg import mod`` names ``pkg.mod``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("hubget"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("hubget"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_checker_sees_circles_and_the_package() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = import_graph()
    # The checker reads real edges: the pipeline does use the engine and the layouts.
    assert "hubget.transfer.engine" in graph["hubget.api.pipeline"]
    assert "hubget.layouts.base" in graph["hubget.api.pipeline"]
    assert len(graph) > 60


def test_no_import_circles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_only_downwards(layer: str) -> None:
    bad = [
        f"{mod} imports {dep}"
        for mod, deps in import_graph().items()
        if layer_of(mod) == layer
        for dep in sorted(deps)
        if layer_of(dep) in FORBIDDEN[layer]
    ]
    assert not bad, "\n".join(bad)


def test_base_modules_import_no_layer() -> None:
    bad = [
        f"{mod} imports {dep}"
        for mod, deps in import_graph().items()
        if layer_of(mod) in BASE_MODULES
        for dep in sorted(deps)
        if layer_of(dep) not in BASE_MODULES
    ]
    assert not bad, "\n".join(bad)


def test_modules_stay_small() -> None:
    big = {name: n for name, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"
