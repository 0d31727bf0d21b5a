"""The package's layers point down, and no module imports itself round a circle (static, every import counted:
top-level, inside functions, and under TYPE_CHECKING). docs/architecture.md describes the same floors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "defocuskit"

# Floors from the top; a module may import its own room and any room on a lower floor. Rooms that share a
# floor are independent of each other (train and inference, data and methods).
FLOORS: list[tuple[str, ...]] = [
    ("cli",),
    ("api",),
    ("eval",),
    ("inference", "train"),
    ("data", "methods"),
    ("models",),
    ("diffusion",),
    ("imaging",),
    ("config",),
    ("io",),
]
FLOOR_OF = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}
OUTSIDE = {"defocuskit", "defocuskit.__main__"}  # the package root (version, lazy API) and `python -m` entry


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The defocuskit modules that `path` imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for a in node.names:
                found.add(f"{module}.{a.name}" if f"{module}.{a.name}" in known else module)
    return {m for m in found if m == "defocuskit" or m.startswith("defocuskit.")} - {name}


def room(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def test_every_module_has_a_floor(graph):
    homeless = sorted(m for m in graph if m not in OUTSIDE and room(m) not in FLOOR_OF)
    assert not homeless, f"modules outside the layers (add their room to FLOORS and docs/architecture.md): {homeless}"


def test_layers_point_down(graph):
    wrong = []
    for name, deps in graph.items():
        if name in OUTSIDE:
            continue
        here = room(name)
        for dep in sorted(deps):
            if dep == "defocuskit" or room(dep) == here:
                continue
            if FLOOR_OF[room(dep)] <= FLOOR_OF[here]:
                wrong.append(f"{name} -> {dep}")
    assert not wrong, "imports that run up or sideways:\n" + "\n".join(wrong)


def test_nothing_below_inference_imports_train(graph):
    below = {r for r, level in FLOOR_OF.items() if level > FLOOR_OF["inference"]} | {"inference"}
    wrong = [f"{m} -> {d}" for m, deps in graph.items() if room(m) in below for d in deps if room(d) == "train"]
    assert not wrong, wrong


def test_no_import_circle(graph):
    """Tarjan's strongly connected components over module imports: every one a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph or w == "defocuskit":
                continue
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
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_files_stay_small():
    big = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not big, f"files over 400 lines (split by responsibility): {big}"


def test_the_checker_sees_a_violation(tmp_path):
    """The walker resolves relative, lazy and TYPE_CHECKING imports (so a wrong one cannot hide)."""
    path = tmp_path / "defocuskit" / "io" / "x.py"
    path.parent.mkdir(parents=True)
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from defocuskit.train import loop\n"
                    "def f():\n    from ..methods import base\n    import defocuskit.cli.app\n")
    name = ".".join(path.relative_to(tmp_path).with_suffix("").parts)
    known = {"defocuskit.train.loop", "defocuskit.methods.base", "defocuskit.cli.app"}
    assert imports(name, path, known) == known
