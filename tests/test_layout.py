"""The layout's rules, read from the sources' imports (every import statement, those
inside functions too): pipeline's two rooms keep apart, pipeline never reaches MLflow, and
no module of the project imports one that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "tracking")
LOOP = {"pipeline.training.train", "pipeline.training.attempt", "pipeline.training.restarts"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module an import statement of the file names (for `from a import b`: a.b
    where that is a module, else a)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
            names.add(node.module)
    return names


MODULES = {
    module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))
}
GRAPH = {
    name: {m for m in imported(path) if m in MODULES and m != name}
    for name, path in MODULES.items()
}


def reached(start: str) -> set[str]:
    """The project's modules that importing `start` can import, directly or not."""
    seen, todo = set(), [start]
    while todo:
        for found in GRAPH[todo.pop()] - seen:
            seen.add(found)
            todo.append(found)
    return seen


def in_room(room: str) -> list[str]:
    return sorted(m for m in MODULES if m.startswith(f"pipeline.{room}."))


def test_the_layout_is_what_the_rules_are_about():
    assert set(LOOP) <= set(MODULES)
    assert len(in_room("training")) >= 7 and len(in_room("analysis")) >= 13
    assert "pipeline.config" in MODULES
    # The reader sees real imports: a lazy one inside a function counts too.
    assert "tracking.training" in GRAPH["tracking.steps"]


@pytest.mark.parametrize("module", in_room("analysis"))
def test_analysis_never_imports_the_training_loop(module):
    assert not reached(module) & LOOP, f"{module} reaches {sorted(reached(module) & LOOP)}"


@pytest.mark.parametrize("module", in_room("training"))
def test_training_never_imports_analysis(module):
    found = {m for m in reached(module) if m.startswith("pipeline.analysis")}
    assert not found, f"{module} reaches {sorted(found)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("pipeline")))
def test_pipeline_never_imports_mlflow_or_tracking(module):
    outside = {m for m in imported(MODULES[module]) if m.split(".")[0] in ("mlflow", "tracking")}
    assert not outside, f"{module} imports {sorted(outside)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_one_that_imports_it_back(module):
    circle = sorted(m for m in GRAPH[module] if module in reached(m))
    assert not circle, f"{module} imports {circle}, which import {module} back"
