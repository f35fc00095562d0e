"""The packages under src/dlrun/ stand in layers, and an import only ever goes down them: no
import cycle, and none that climbs back up (docs/architecture.md draws the same layers)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "dlrun"

# top to bottom; a module imports from its own layer or the layers below it
LAYERS = [
    {"__init__", "__main__", "api", "schema"},  # the face: the API, python -m, the old import path
    {"commands"},  # dlrun-rerun, dlrun-eval, dlrun-gradcheck
    {"cli"},  # the dlrun command
    {"sweeps"},
    {"runs"},
    {"tracking"},
    {"engine"},
    {"tasks"},
    {"config"},
    {"rundir"},
    {"scratch", "plots", "compat", "errors", "terminal"},
]
FLOOR = {part: len(LAYERS) - i for i, layer in enumerate(LAYERS) for part in layer}


def part(module: str) -> str:
    """dlrun.cli.main -> cli; dlrun -> __init__."""
    names = module.split(".")
    return names[1] if len(names) > 1 else "__init__"


def module_name(path: Path) -> str:
    names = ["dlrun", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(names[:-1] if names[-1] == "__init__" else names)


def is_module(name: str) -> bool:
    path = SRC.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path, top_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, module) of each dlrun module that ``path`` imports (``from dlrun.x import y``: the
    module dlrun.x.y where there is one, else dlrun.x)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "dlrun":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.append((node.lineno, sub if is_module(sub) else node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("dlrun.")]
    return found


def test_every_package_has_a_layer() -> None:
    parts = {part(module_name(p)) for p in SRC.rglob("*.py")}
    assert not parts - set(FLOOR), "a package or module missing from LAYERS"
    assert not set(FLOOR) - parts, "LAYERS names something that is not there"


def test_no_import_climbs_back_up() -> None:
    up = []
    for path in sorted(SRC.rglob("*.py")):
        me = part(module_name(path))
        for line, target in imports(path):
            if FLOOR[part(target)] > FLOOR[me]:
                up.append(f"{path.relative_to(SRC)}:{line} imports {target}")
    assert not up, "imports that climb back up a layer:\n" + "\n".join(up)


def test_no_import_cycle() -> None:
    """Between modules, counting the imports made when a module is imported (not those inside
    functions, nor under TYPE_CHECKING)."""
    graph = {}
    for path in SRC.rglob("*.py"):
        graph[module_name(path)] = {t for _, t in imports(path, top_level_only=True)}
    graph = {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items()}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path, module, target]
            if target not in state and (cycle := visit(target, [*path, module])):
                return cycle
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [])
            assert cycle is None, "an import cycle: " + " -> ".join(cycle)
