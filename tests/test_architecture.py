"""The house rules that keep the code base readable, checked on every run: small files, short
functions, and imports of vislang modules only at module level (function-level imports are for
optional third-party extras), except in the CLI and the lazy top-level ``vislang.load``. The
layers contract itself is checked by ``lint-imports`` in ``.ci/run``."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "vislang"
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 80


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_files_are_small():
    long = [f"{p.relative_to(SRC)}: {n}" for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES]
    assert not long, f"files over {MAX_FILE_LINES} lines: {long}"


def test_functions_are_short():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_vislang_is_imported_at_module_level_only():
    allowed = {SRC / "__init__.py"} | set((SRC / "cli").rglob("*.py"))
    found = []
    for path in _modules():
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                names = []
                if isinstance(inner, ast.Import):
                    names = [alias.name for alias in inner.names]
                elif isinstance(inner, ast.ImportFrom) and inner.level == 0:
                    names = [inner.module or ""]
                if any(name == "vislang" or name.startswith("vislang.") for name in names):
                    found.append(f"{path.relative_to(SRC)}:{inner.lineno} in {node.name}")
    assert not found, f"function-level imports of vislang modules: {sorted(set(found))}"


def test_no_import_cycles():
    """No module imports itself through others (package __init__ files included)."""
    import grimp  # brought by import-linter, in the test extra

    graph = grimp.build_graph("vislang", exclude_type_checking_imports=True)
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    cycles = [m for m in edges if any(graph.find_shortest_chain(importer=d, imported=m) for d in edges[m])]
    assert not cycles, f"modules on an import cycle: {sorted(cycles)}"
