"""The public Python API: every exported name resolves and is documented, and the README's
Python example runs as written."""

import os
import re
import subprocess
import sys

import numpy as np

import nnbasics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_exported_name_resolves_and_has_a_docstring():
    for name in nnbasics.__all__:
        obj = getattr(nnbasics, name)
        doc = getattr(obj, "__doc__", None) or ""
        if name == "LOSSES":  # a registry instance: its class documents it
            doc = type(obj).__doc__ or ""
        assert doc.strip(), f"nnbasics.{name} has no docstring"
    assert "fit" in dir(nnbasics)


def test_import_is_cheap():
    code = "import sys, nnbasics; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    block = re.search(r"<!-- python-api:begin -->\s*```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    import matplotlib

    matplotlib.use("Agg")
    scope: dict = {}
    exec(compile(block, "README.md (Python API)", "exec"), scope)
    acc = np.asarray(scope["result"].final("test_accuracy"))
    assert acc.shape == (3,)
    assert np.all(acc > 0.6), acc  # the MNIST-1D CNN is far above chance (10%) after 1500 steps
    assert (tmp_path / "cnn.png").read_bytes()[:4] == b"\x89PNG"


def test_every_library_folder_is_a_package_that_a_wheel_ships():
    """A folder without __init__.py works in an editable install but is left out of a wheel."""
    from setuptools import find_packages

    found = set(find_packages(ROOT, include=["nnbasics", "nnbasics.*"]))
    folders = {os.path.relpath(d, ROOT).replace(os.sep, ".") for d, _, files in os.walk(os.path.join(ROOT, "nnbasics"))
               if "__pycache__" not in d and any(f.endswith(".py") for f in files)}
    assert folders <= found, folders - found
