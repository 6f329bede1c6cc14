"""Writes the Colab notebooks (one per lecture part), stored without outputs; the teaching sections of each
part come from `lessons/<part>.py` (percent format, also runnable as a script).

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
from nnbasics.runs.experiment import experiment_names, load_experiment, run_experiment, terminal_summary
from nnbasics.progress import set_quiet
from nnbasics.runs.report import claims_table
from nnbasics.runs.workdir import default_workdir

TOPIC = "{topic}"
PRESET = os.environ.get("NNBASICS_PRESET", "quick")  # "quick" (minutes), "full", or "smoke" (seconds)
ROOT = pathlib.Path(os.environ.get("NNBASICS_ROOT", "runs"))
set_quiet(PRESET == "smoke")
names = [n for n in experiment_names()
         if getattr(load_experiment(n), "TOPIC", "") == TOPIC and getattr(load_experiment(n), "REPRODUCE", True)]
print("experiments:", ", ".join(names))
results = {{}}
for name in names:
    wd = default_workdir(name, PRESET, ROOT)
    results[name] = run_experiment(name, PRESET, workdir=wd)
    display(Markdown(f"### {{name}}\\n\\n" + claims_table([results[name]])))
    for fig in results[name]["figures"]:
        display(Image(filename=str(wd / fig)))'''

SUMMARY = '''# pass / fail / inconclusive (a 95% interval over seeds; the smoke preset has too few seeds to decide)
print(f"{PRESET} preset:", terminal_summary(results.values()))
assert sum(len(r["claims"]) for r in results.values()) > 0'''


LESSONS = pathlib.Path(__file__).resolve().parent / "lessons"
CHECK = ("## The check: this part's experiments\n\n"
         "The sections above showed each idea on a tiny example. The cells below run this part's experiments through "
         "the library (the same code as `nnbasics run NAME`): each turns what the text said into claims measured over "
         "several seeds, with a verdict (pass, fail, or inconclusive when the seeds do not decide).")


def lesson_cells(part: str) -> list[nbformat.NotebookNode]:
    """The teaching cells of a lecture part, read from `lessons/<part>.py` (percent format: `# %%` starts a code
    cell, `# %% [markdown]` a text cell whose lines are comments). The lesson file also runs as a plain script."""
    path = LESSONS / f"{part}.py"
    if not path.exists():
        return []
    cells, kind, lines = [], None, []

    def flush() -> None:
        text = "\n".join(lines).strip("\n")
        if kind == "markdown":
            text = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in text.splitlines())
        if kind is not None and text.strip():
            cells.append(new_markdown_cell(text) if kind == "markdown" else new_code_cell(text))

    for line in path.read_text().splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        else:
            lines.append(line)
    flush()
    return cells


def notebook(part: str) -> nbformat.NotebookNode:
    title, what = PARTS[part]
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell(
            f"# nnbasics: {title}\n\n{what}.\n\n"
            "The notebook first teaches the ideas of this part of the lecture, one section each: a short text, small "
            "cells that call the library and plot, and a few things to try. Then it runs the part's experiments, "
            "which check at scale what the text said.\n\n"
            "Open this notebook in Colab (File > Open notebook > GitHub, then your copy of the nnbasics "
            f"repository, `colab/{part}.ipynb`), choose a TPU, GPU or CPU runtime, set `REPO_URL` in the first "
            "cell and run all cells. Every experiment runs through the library (`nnbasics.runs.experiment`), the same "
            f"code as `nnbasics run NAME`; `NNBASICS_PRESET` picks the preset (default `quick`)."
        ),
        new_code_cell(SETUP),
        new_code_cell(DEVICES),
        *lesson_cells(part),
        new_markdown_cell(CHECK),
        new_code_cell(RUN.format(topic=part)),
        new_code_cell(SUMMARY),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["colab"] = {"provenance": []}
    nb.metadata["accelerator"] = "GPU"
    return nb


LIBRARY = [
    ("md", "## A model, a data set, a training run\n\nThe pieces the experiments are made of: an embedded data set, "
           "a registered model (a linen module), and `fit`, which trains several seeds side by side in one "
           "compiled program."),
    ("code", '''import os
import jax
import matplotlib.pyplot as plt
import numpy as np
from nnbasics import TrainConfig, fit, get_model, load_dataset, model_names

SMOKE = os.environ.get("NNBASICS_PRESET") == "smoke"  # the test suite runs this notebook in seconds
data = load_dataset("mnist1d")
print("train", data.x_train.shape, "test", data.x_test.shape, "classes", data.num_classes)
print("models:", ", ".join(model_names()))'''),
    ("code", '''model = get_model("mnist1d_cnn", num_classes=data.num_classes)
variables = model.init(jax.random.key(0), data.x_train[:1])
print(model)
print("parameters:", sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"])))'''),
    ("code", '''config = TrainConfig(steps=200 if SMOKE else 3000, batch_size=100, eval_every=100 if SMOKE else 250,
                     seeds=(0, 1, 2), optimizer={"name": "adam", "learning_rate": 1e-2})
result = fit(model, data, config)
steps, acc = result.curve("test_accuracy")  # (eval points,), (seeds, eval points)
plt.plot(steps, 100 * acc.T, alpha=0.7)
plt.xlabel("training step"); plt.ylabel("test accuracy (%)"); plt.title("MNIST-1D CNN, three seeds"); plt.show()
print("final test accuracy per seed:", np.round(100 * result.final("test_accuracy"), 2))'''),
    ("md", "The trained parameters of each seed are in `result.member_state(i)`; `nnbasics.engine.train_step` and "
           "`evaluate` are the pure functions `fit` compiles, for a loop of your own."),
    ("code", '''state = result.member_state(0)
logits = model.apply(state.variables, data.x_test[:8])
print("predicted", np.asarray(logits.argmax(-1)), "true", data.y_test[:8])'''),
]


def library_notebook() -> nbformat.NotebookNode:
    """The Python API, not whole experiments: load data, build a model, train it, look at it."""
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell("# nnbasics as a library\n\nBuild a model and train it through the library's Python API "
                          "(the README's *Python API* section). Set `REPO_URL` in the first cell in Colab."),
        new_code_cell(SETUP), new_code_cell(DEVICES),
        *[new_markdown_cell(text) if kind == "md" else new_code_cell(text) for kind, text in LIBRARY],
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def build(stem: str) -> nbformat.NotebookNode:
    return library_notebook() if stem == "library" else notebook(stem)


def main() -> None:
    here = pathlib.Path(__file__).parent
    for stem in [*PARTS, "library"]:
        nbformat.write(build(stem), here / f"{stem}.ipynb")


if __name__ == "__main__":
    main()
