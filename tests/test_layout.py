"""The shape of the package: no import cycles (module-level and function-level imports alike),
no module over 400 lines, model code independent of stages, lint clean."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT

PACKAGE = PROJECT / "pipeline"
MAX_LINES = 400


def module_graph() -> dict[str, set[str]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PROJECT).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state, stack, found = {}, [], []

    def visit(u: str) -> None:
        state[u] = "open"
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == "open":
                found.append(stack[stack.index(v) :] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = "done"

    for u in sorted(graph):
        if u not in state:
            visit(u)
    return found


def test_no_import_cycles():
    assert cycles(module_graph()) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_model_and_text_code_import_no_stage_scoring_or_training():
    graph = module_graph()
    for name, deps in graph.items():
        if name.startswith(("pipeline.models.", "pipeline.text.", "pipeline.io.", "pipeline.exec.")):
            bad = {d for d in deps if d.startswith(("pipeline.stages", "pipeline.scoring", "pipeline.training", "pipeline.runner"))}
            assert not bad, f"{name} imports {bad}"


def test_stages_share_services_not_each_others_internals():
    graph = module_graph()
    for name, deps in graph.items():
        if name.startswith("pipeline.stages."):
            assert not {d for d in deps if d.startswith("pipeline.stages.")}, name


def test_no_module_over_400_lines():
    long = {
        str(p.relative_to(PROJECT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed (pip install -e '.[test]')")
def test_ruff_check_passes():
    result = subprocess.run([RUFF, "check", "--output-format", "concise", "."], cwd=PROJECT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
