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
LONG_FUNCTIONS_ALLOWED = {
    ("nnbasics/cli.py", "build_parser"),  # 80 lines
    ("nnbasics/cli.py", "main"),  # 133
    ("nnbasics/runs/experiment.py", "_run_locked"),  # 82
}


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
