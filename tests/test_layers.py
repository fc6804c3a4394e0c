"""The house keeps its shape: `sim` imports only downward between the layers of DESIGN.md §4,
and no module imports itself back through others.

    spec, catalog, workload -> kernels -> record -> world -> metrics (record only) -> result
    -> runner -> experiment/sweep/planning/decision -> report, cli

The imports are read from the source (ast), every `import` statement anywhere in a module:
at the top, inside a function (a lazy import is still a dependency), or under
`TYPE_CHECKING` (a type is a dependency too). Cycles are looked for among the imports that
run (TYPE_CHECKING ones left out: they never execute).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SIM = Path(__file__).parent.parent / "sim"

# (layer, module prefixes), lowest first; a module may import its own layer and below
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("spec, catalog, workload", ("sim.spec", "sim.catalog", "sim.workload", "sim.streams", "sim.jit", "sim.outputs",
                                 "sim.version", "sim.routers", "sim.detectors")),
    ("kernels", ("sim.kernels",)),
    ("record", ("sim.record",)),
    ("world", ("sim.world",)),
    ("metrics", ("sim.metrics",)),
    ("result", ("sim.result",)),
    ("runner", ("sim.runner",)),
    ("experiment, sweep, planning, decision", ("sim.experiment", "sim.sweep", "sim.planning", "sim.decision",
                                               "sim.predict", "sim.calibration")),
    ("report, cli", ("sim.report", "sim.cli")),
    ("package", ("sim",)),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SIM.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    best, length = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = i, len(prefix)
    if best < 0:
        raise AssertionError(f"{module} is in no layer of DESIGN.md §4: add it to LAYERS")
    return best


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, modules: set[str]) -> list[tuple[str, int, bool]]:
    """(imported sim module, line, runs) for every import in the file; `runs` is False under
    `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(), str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def resolve(name: str) -> str | None:
        while name and name not in modules:  # `from sim.x import function`: the module is sim.x
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST, runs: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, runs)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "sim" or alias.name.startswith("sim."):
                    target = resolve(alias.name)
                    if target:
                        found.append((target, node.lineno, runs))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "sim" or base.startswith("sim."):
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    target = full if full in modules else resolve(base)
                    if target:
                        found.append((target, node.lineno, runs))
        for child in ast.iter_child_nodes(node):
            visit(child, runs)

    visit(tree, True)
    return found


def graph() -> dict[str, list[tuple[str, int, bool]]]:
    files = {module_name(p): p for p in SIM.rglob("*.py")}
    modules = set(files)
    return {name: imports_of(path, modules) for name, path in sorted(files.items())}


def test_every_module_is_in_a_layer() -> None:
    for module in graph():
        layer_of(module)


def test_no_upward_import() -> None:
    """A module imports only its own layer and the layers below it."""
    upward = []
    for module, imports in graph().items():
        mine = layer_of(module)
        for target, line, _ in imports:
            theirs = layer_of(target)
            if theirs > mine:
                upward.append(f"{module}:{line} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]})")
    assert upward == [], "\n".join(upward)


def test_metrics_and_spec_know_nothing_of_the_world() -> None:
    """The two rules DESIGN.md §3 states outright: nothing under sim.metrics imports sim.world,
    and spec checks import no world module."""
    offending = [f"{module} imports {target}" for module, imports in graph().items()
                 if module.startswith(("sim.metrics", "sim.spec", "sim.record"))
                 for target, _, _ in imports if target.startswith("sim.world")]
    assert offending == []


def test_no_import_cycle() -> None:
    """No module reaches itself through the imports that run (Tarjan's strongly connected
    components over the module graph)."""
    edges = {m: sorted({t for t, _, runs in imports if runs and t != m}) for m, imports in graph().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:  # recursive: the graph has a few hundred nodes
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, []):
            if w not in index:
                connect(w)
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
                cycles.append(sorted(component))

    for v in edges:
        if v not in index:
            connect(v)
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize(("source", "expected"), [
    ("from sim.world.world import World\n", ["sim.world.world"]),
    ("import sim.kernels.batching as b\n", ["sim.kernels.batching"]),
    ("from sim.metrics import latency\n", ["sim.metrics.latency"]),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sim.world import World\n", ["sim.world"]),
    ("def f():\n    from sim.runner import run_point\n", ["sim.runner"]),
])
def test_the_walker_sees_every_kind_of_import(tmp_path: Path, source: str, expected: list[str]) -> None:
    """The walker itself: top-level, aliased, submodule, TYPE_CHECKING and lazy imports."""
    fake = SIM / "metrics" / "_layer_probe.py"
    modules = {module_name(p) for p in SIM.rglob("*.py")}
    path = tmp_path / "probe.py"
    path.write_text(source)
    found = imports_of_text(path, fake, modules)
    assert [t for t, _, _ in found] == expected


def imports_of_text(path: Path, pretend: Path, modules: set[str]) -> list[tuple[str, int, bool]]:
    """imports_of for a file written elsewhere, as if it lived at `pretend` inside sim/."""
    pretend.write_text(path.read_text())
    try:
        return imports_of(pretend, modules)
    finally:
        pretend.unlink()
