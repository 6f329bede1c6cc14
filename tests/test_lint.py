"""The tree stays lint-clean (ruff, configured in ruff.toml) and its functions short, so style drift fails CI."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable), "ruff")
    if not os.path.exists(ruff):
        pytest.skip("ruff is not installed (pip install -e .[test])")
    out = subprocess.run([ruff, "check", "nnbasics", "experiments", "tests", "colab"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


MAX_FUNCTION_LINES = 80  # issue 14: a newcomer reads a function at once

# Functions still MAX_FUNCTION_LINES or longer, in files that others are rewriting (lines when listed). Delete an
# entry once its function is split; test_long_function_allowlist_is_current says when.
LONG_FUNCTIONS_ALLOWED: set[tuple[str, str]] = set()


def _long_functions() -> dict[tuple[str, str], int]:
    """(path, name) -> lines of every function (nested ones included) in nnbasics/ and experiments/ that is too long."""
    import ast
    import pathlib

    root = pathlib.Path(ROOT)
    found = {}
    for path in sorted([*(root / "nnbasics").rglob("*.py"), *(root / "experiments").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines >= MAX_FUNCTION_LINES:
                    found[(path.relative_to(root).as_posix(), node.name)] = lines
    return found


def test_functions_are_shorter_than_80_lines():
    too_long = {k: v for k, v in _long_functions().items() if k not in LONG_FUNCTIONS_ALLOWED}
    assert not too_long, (f"functions of {MAX_FUNCTION_LINES} lines or more (split them into named pieces): "
                          + ", ".join(f"{p}:{name} ({n} lines)" for (p, name), n in sorted(too_long.items())))


def test_long_function_allowlist_is_current():
    fixed = sorted(set(LONG_FUNCTIONS_ALLOWED) - set(_long_functions()))
    assert not fixed, ("now shorter than the limit (or gone): remove from LONG_FUNCTIONS_ALLOWED in tests/test_lint.py: "
                       + ", ".join(f"{p}:{name}" for p, name in fixed))


# The layers, lowest first: a module may import its own layer and those below, never one above (DESIGN.md:
# the library never imports the engine or run management; the engine never imports run management).
LAYERS = {"registry": 0, "files": 0, "progress": 0, "config": 0, "nn": 1, "models": 2, "data": 2, "analysis": 2,
          "engine": 3, "runs": 4, "cli": 5}


def _import_graph() -> dict[str, set[str]]:
    """nnbasics module -> the nnbasics modules it imports (at the top or inside functions)."""
    import ast
    import pathlib

    root = pathlib.Path(ROOT)
    paths = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (root / "nnbasics").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nnbasics"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in paths else node.module)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name in paths}
        graph[name] = {t for t in targets if t in paths and t != name}
    return graph


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_no_module_imports_a_layer_above_it():
    upward = [f"{a} -> {b}" for a, targets in _import_graph().items() for b in targets
              if _layer(a) is not None and _layer(b) is not None and _layer(b) > _layer(a)]
    assert not upward, "imports from a higher layer: " + ", ".join(sorted(upward))


def test_import_graph_has_no_cycle():
    graph = _import_graph()
    # a package's __init__ re-exporting its modules is not a cycle of logic: leave packages out
    graph = {a: {b for b in targets if b.count(".") > 0 and b in graph and not _is_package(b)}
             for a, targets in graph.items() if not _is_package(a)}
    cycles, done = [], set()

    def visit(node, path):
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, path + [nxt])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    assert not cycles, "import cycles: " + "; ".join(sorted(set(cycles)))


def _is_package(module: str) -> bool:
    return os.path.exists(os.path.join(ROOT, *module.split("."), "__init__.py"))
