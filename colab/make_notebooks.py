"""Writes the Colab notebooks (one per lecture part), stored without outputs.

    python colab/make_notebooks.py
"""

from __future__ import annotations

import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

PARTS = {
    "basics": ("Neurons, layers, activations, capacity, regularization and backpropagation",
               "perceptron and XOR, the MNIST-1D table, activations, capacity, ridge/weight decay/dropout, backprop"),
    "optimization": ("Optimization", "GD, SGD, momentum, Nesterov, RMSProp, Adam; Why Momentum Really Works"),
    "convolution": ("Convolution", "conv as a matrix, equivariance, pooling, receptive fields, segmentation, "
                                   "image statistics"),
    "architectures": ("Architectures and residual learning", "AlexNet, VGG, GoogLeNet, ResNets, degradation, "
                                                              "loss landscapes"),
    "normalization": ("Normalization and normalizer-free networks", "BN/LN/IN/GN/WS, signal propagation, "
                                                                     "NF-ResNets, adaptive gradient clipping"),
}

SETUP = '''# Set-up: install nnbasics (in Colab) with the JAX build for this runtime's accelerator.
import os, shutil, subprocess, sys

REPO_URL = os.environ.get("NNBASICS_REPO_URL", "")  # the git URL of your copy of nnbasics, e.g. https://github.com/<you>/nnbasics
IN_COLAB = "google.colab" in sys.modules

def accelerator() -> str:
    if os.path.exists("/dev/accel0") or "COLAB_TPU_ADDR" in os.environ or "TPU_NAME" in os.environ:
        return "tpu"
    if shutil.which("nvidia-smi"):
        return "gpu"
    return "cpu"

ACCELERATOR = accelerator()
if IN_COLAB:
    if not REPO_URL:
        raise SystemExit("Set REPO_URL above to the git URL of nnbasics, then run this cell again.")
    jax_extra = {"tpu": ["jax[tpu]"], "gpu": ["jax[cuda12]"], "cpu": []}[ACCELERATOR]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"nnbasics @ git+{REPO_URL}", *jax_extra],
                   check=True)
print("accelerator:", ACCELERATOR)'''

DEVICES = '''import jax
print("JAX", jax.__version__, "| backend:", jax.default_backend(), "| devices:", jax.devices())'''

RUN = '''# Run this part's experiments through the library (results reused if already finished).
import pathlib
from IPython.display import Image, Markdown, display
from nnbasics.experiment import experiment_names, load_experiment, run_experiment
from nnbasics.progress import set_quiet
from nnbasics.report import claims_table

TOPIC = "{topic}"
PRESET = os.environ.get("NNBASICS_PRESET", "quick")  # "quick" (minutes), "full", or "smoke" (seconds)
ROOT = pathlib.Path(os.environ.get("NNBASICS_ROOT", "runs"))
set_quiet(PRESET == "smoke")
names = [n for n in experiment_names()
         if getattr(load_experiment(n), "TOPIC", "") == TOPIC and getattr(load_experiment(n), "REPRODUCE", True)]
print("experiments:", ", ".join(names))
results = {{}}
for name in names:
    wd = ROOT / f"{{name}}-{{PRESET}}"
    results[name] = run_experiment(name, PRESET, workdir=wd)
    display(Markdown(f"### {{name}}\\n\\n" + claims_table([results[name]])))
    for fig in results[name]["figures"]:
        display(Image(filename=str(wd / fig)))'''

SUMMARY = '''passed = sum(c["verdict"] == "pass" for r in results.values() for c in r["claims"])
total = sum(len(r["claims"]) for r in results.values())
print(f"{passed} of {total} claims pass ({PRESET} preset)")
assert total > 0'''


def notebook(part: str) -> nbformat.NotebookNode:
    title, what = PARTS[part]
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell(
            f"# nnbasics: {title}\n\n{what}.\n\n"
            "Open this notebook in Colab (File > Open notebook > GitHub, then your copy of the nnbasics "
            f"repository, `colab/{part}.ipynb`), choose a TPU, GPU or CPU runtime, set `REPO_URL` in the first "
            "cell and run all cells. Every experiment runs through the library (`nnbasics.experiment`), the same "
            f"code as `nnbasics run NAME`; `NNBASICS_PRESET` picks the preset (default `quick`)."
        ),
        new_code_cell(SETUP),
        new_code_cell(DEVICES),
        new_code_cell(RUN.format(topic=part)),
        new_code_cell(SUMMARY),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["colab"] = {"provenance": []}
    nb.metadata["accelerator"] = "GPU"
    return nb


def main() -> None:
    here = pathlib.Path(__file__).parent
    for part in PARTS:
        nbformat.write(notebook(part), here / f"{part}.ipynb")


if __name__ == "__main__":
    main()
