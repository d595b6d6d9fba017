"""The shape of the package: no import cycles between jitrs modules at import time, and no function too long to
read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

import jitrs

PACKAGE = Path(jitrs.__file__).parent
MAX_FUNCTION_LINES = 120


def module_imports(path: Path) -> set[str]:
    """The jitrs modules `path` imports when it is imported (module level, not inside functions)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("jitrs.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "jitrs":
                found |= {f"jitrs.{a.name}" for a in node.names if (PACKAGE / f"{a.name}.py").exists()}
            elif node.module.startswith("jitrs."):
                found.add(node.module)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def package_graph() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.glob("*.py"):
        name = "jitrs" if path.stem == "__init__" else f"jitrs.{path.stem}"
        graph[name] = module_imports(path) - {name}
    return graph


def test_no_import_cycles() -> None:
    graph = {k: v for k, v in package_graph().items() if k != "jitrs"}  # __init__ re-exports, imported by none
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"b"}}) is None
    # the import that used to close a circle: the CLI module importing the job that imported the CLI module
    assert module_imports(PACKAGE / "train.py") >= {"jitrs.train_config"}
    assert "jitrs.train" not in module_imports(PACKAGE / "train_config.py")


def test_no_function_is_too_long() -> None:
    long = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.name}:{node.name} ({lines} lines)")
    assert not long, long
