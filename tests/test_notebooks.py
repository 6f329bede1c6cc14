"""Every Colab notebook executes on CPU at the smallest preset (nbclient) on 8 simulated devices, as on a
Colab TPU, so a broken one fails CI."""

import json
import pathlib
import re

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

COLAB = pathlib.Path(__file__).resolve().parent.parent / "colab"
NOTEBOOKS = sorted(COLAB.glob("*.ipynb"))
# identities and exact counts: they pass at any preset, the smoke one included (each experiment's own test says why)
EXACT = {
    "backprop": ("mlp_gradients_match", "conv_gradients_match", "sgd_step_matches"),
    "conv_properties": ("parameter_counts", "conv_is_toeplitz_matrix", "translation_equivariance", "any_input_size",
                        "strided_conv_is_subsampled_conv", "channel_pooling_rotation_invariance"),
    "receptive_fields": ("dilated_receptive_fields", "stacked_3x3_convs", "registry_receptive_fields"),
    "regularization": ("dropout_eval_and_fresh_masks",),
    "momentum": ("gd_optimal_rate", "momentum_allows_larger_steps"),
    "model_zoo": ("params_equal_reference",),
}


def test_notebooks_exist_and_are_stored_without_outputs():
    assert {p.stem for p in NOTEBOOKS} == {"basics", "optimization", "convolution", "architectures", "normalization",
                                           "library"}
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, p.name


def test_notebooks_match_their_generator():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_notebooks", COLAB / "make_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for p in NOTEBOOKS:
        stored = [(c.cell_type, c.source) for c in nbformat.read(p, as_version=4).cells]
        assert stored == [(c.cell_type, c.source) for c in mod.build(p.stem).cells], f"regenerate {p.name}"


# ideas issue 32 asks each lecture-part notebook to teach, as words its section titles contain
IDEAS = {
    "basics": ("perceptron", "xor", "activation", "softmax", "backprop", "dropout"),
    "optimization": ("gradient descent", "momentum", "optimizers"),
    "convolution": ("toeplitz", "equivariance", "receptive field", "dilation"),
    "architectures": ("model zoo", "residual"),
    "normalization": ("batchnorm", "groupnorm", "weight standardization", "signal propagation", "gradient clipping"),
}


@pytest.mark.parametrize("part", sorted(IDEAS))
def test_notebooks_teach_each_idea_before_the_run(part):
    """Each idea is a section (a '## ' title and its text), at least one code cell, and a 'Try this', all before the
    experiment run."""
    cells = nbformat.read(COLAB / f"{part}.ipynb", as_version=4).cells
    run = next(i for i, c in enumerate(cells) if c.cell_type == "code" and "run_experiment(" in c.source)
    starts = [i for i, c in enumerate(cells[:run]) if c.cell_type == "markdown" and re.match(r"## \d+\. ", c.source)]
    assert len(starts) >= 2, part
    titles = " | ".join(cells[i].source.splitlines()[0].lower() for i in starts)
    for idea in IDEAS[part]:
        assert idea in titles, (part, idea, titles)
    for a, b in zip(starts, [*starts[1:], run]):
        section = cells[a:b]
        assert any(c.cell_type == "code" for c in section), cells[a].source[:60]
        assert any(c.cell_type == "markdown" and "**Try this**" in c.source for c in section), cells[a].source[:60]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("NNBASICS_PRESET", "smoke")
    monkeypatch.setenv("NNBASICS_ROOT", str(tmp_path))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")  # as on a Colab TPU (8 cores)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "backend: cpu" in text
    if path.stem == "library":
        accs = re.search(r"final test accuracy per seed: \[([^\]]*)\]", text).group(1).split()
        assert len(accs) == 3 and all(float(a) > 30 for a in accs), text[-2000:]  # 10 classes: chance is 10%
        return
    summary = re.search(r"smoke preset: (\d+) of (\d+) claims pass", text)
    assert summary and int(summary.group(2)) > 0, text[-2000:]
    assert _check_claims_files(tmp_path) == (int(summary.group(1)), int(summary.group(2)))


def _check_claims_files(root: pathlib.Path) -> tuple[int, int]:
    """(claims passed, claims) over the runs under `root`, after checking that every stored verdict is the one
    its stored samples give against the experiment's THRESHOLDS and that the exact claims pass."""
    from nnbasics.files import to_json
    from nnbasics.runs.claims import rejudge
    from nnbasics.runs.experiment import load_experiment

    docs = [json.loads(f.read_text()) for f in sorted(root.rglob("claims.json"))]
    docs = [d for d in docs if "experiment" in d]  # one run's claims, not a combined report
    passed = total = 0
    for doc in docs:
        thresholds = load_experiment(doc["experiment"]).THRESHOLDS
        verdicts = {c["id"]: c["verdict"] for c in doc["claims"]}
        for c in doc["claims"]:
            # compared as the files store them: a NaN sample (a seed that never reached a target) equals itself there
            assert to_json(c) == to_json(rejudge(c, thresholds)), (doc["experiment"], c["id"])
        for cid in EXACT.get(doc["experiment"], ()):
            assert verdicts[cid] == "pass", (doc["experiment"], cid)
        passed += sum(v == "pass" for v in verdicts.values())
        total += len(verdicts)
    return passed, total
