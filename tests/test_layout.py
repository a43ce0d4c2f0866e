"""The source tree shows the pipeline: `model/` and `app/` grouped by stage, each group importing
only the groups before it, no import cycles, and `model` never importing `app` (issue 10).

Imports are read from the source with `ast` (function-level imports included), so the check needs
no heavy dependency and sees imports that only run on some code paths."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "app", "bench")

# group -> the groups it may import (besides itself). A group is a subpackage, or a flat module.
ALLOWED = {
    "model.geometry": set(),
    "model.formats": {"model.geometry"},
    "model.tracking": {"model.geometry", "model.formats"},
    "model.data": {"model.geometry", "model.formats", "model.tracking", "model.net", "model.atomic_write", "model.resources"},
    "model.net": {"model.geometry", "model.resources", "model.atomic_write"},
    "model.diffusion": {"model.geometry", "model.formats", "model.tracking", "model.data", "model.net"},
    "model.training": {"model.geometry", "model.formats", "model.tracking", "model.data", "model.net", "model.diffusion",
                       "model.atomic_write", "model.runtime"},
    "model.evaluation": {"model.geometry", "model.formats", "model.tracking", "model.data", "model.net", "model.diffusion",
                         "model.resources"},
    "model.coldstart": {"model.geometry", "model.formats", "model.tracking", "model.data", "model.net", "model.diffusion",
                        "model.atomic_write"},
    "model.lift": {"model.geometry", "model.formats", "model.tracking", "model.data"},
    "model.resources": set(),
    "model.runtime": set(),
    "model.atomic_write": set(),
    "app.gl": {"model"},
    "app.live": {"model"},
    "app.viewer": {"model", "app.gl", "app.live"},
    "app.xr": {"model", "app.gl", "app.viewer"},
    "app.cli": {"model", "app.gl", "app.viewer", "app.live", "app.xr", "bench"},
}


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules imported anywhere in the file (a `from pkg import mod` counts as pkg.mod)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, name, known) for name, path in mods.items()}


def group(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def find_cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Cycles of a directed graph (each as a closed path), by depth-first search."""
    state: dict[str, int] = {}
    cycles = []

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m, stack + [m])
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n, [n])
    return cycles


def test_cycle_finder_finds_cycles() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles() -> None:
    cycles = find_cycles(graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_model_never_imports_app_and_groups_import_only_earlier_stages() -> None:
    wrong = []
    for name, deps in graph().items():
        if name.split(".")[0] == "bench" or name in PACKAGES:
            continue
        g = group(name)
        allowed = ALLOWED.get(g)
        assert allowed is not None, f"{name}: group {g} has no place in the layout (add it to ALLOWED and to its __init__ docstring)"
        for d in deps:
            dg = group(d)
            if dg == g or dg in allowed or d.split(".")[0] in allowed:
                continue
            wrong.append(f"{name} imports {d}")
    assert not wrong, "imports against the layout:\n" + "\n".join(sorted(wrong))


def test_few_flat_modules_and_every_group_says_what_it_holds() -> None:
    flat = lambda pkg: [p.stem for p in (ROOT / pkg).glob("*.py") if p.stem != "__init__"]
    assert len(flat("model")) <= 8, flat("model")
    assert len(flat("app")) <= 12, flat("app")
    for pkg in ("model", "app"):
        for sub in (ROOT / pkg).iterdir():
            init = sub / "__init__.py"
            if sub.is_dir() and init.exists():
                doc = ast.get_docstring(ast.parse(init.read_text())) or ""
                assert len(doc) > 80 and "import" in doc, f"{init}: say what the package holds and what it may import"
