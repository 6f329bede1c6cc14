import json
import os
import subprocess
import sys

import pytest

from nnbasics import config as config_lib
from nnbasics.cli import main
from nnbasics.runs import experiment as exp
from nnbasics.runs.workdir import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("mnist1d-smoke")
    code = main(["--quiet", "run", "mnist1d", "--smoke", "--workdir", str(wd)])
    return wd, code


def test_run_writes_the_workdir_contract(smoke_run):
    wd, code = smoke_run
    assert code in (0, 1)  # smoke claims may fail; the run itself must finish
    for f in ("config.json", "metrics.jsonl", "claims.json", "report.md", "figures/test_accuracy.png"):
        assert (wd / f).exists(), f
    doc = json.loads((wd / "claims.json").read_text())
    assert doc["experiment"] == "mnist1d" and doc["seconds"] > 0
    ids = [c["id"] for c in doc["claims"]]
    assert ids == ["test_accuracy_logistic", "test_accuracy_mlp", "test_accuracy_cnn"]
    import experiments.mnist1d as m1
    from nnbasics.runs.claims import rejudge

    for c in doc["claims"]:
        assert set(c) >= {"id", "claim", "source", "expected", "measured", "verdict", "checks"}
        assert c["verdict"] in ("pass", "fail", "inconclusive")
        assert all(isinstance(x, (int, float)) for v in c["measured"].values() for x in (v if isinstance(v, list) else [v]))
        # the verdicts follow the stored samples and the experiment's THRESHOLDS (recomputed here)
        assert c == rejudge(c, m1.THRESHOLDS)
        assert all(k["name"] in m1.THRESHOLDS and len(k["samples"]) == k["n"] >= 1 for k in c["checks"])
    measured = {k: v for c in doc["claims"] for k, v in c["measured"].items()}
    assert all(0 < a <= 100 for a in measured["test_accuracy_cnn"])
    rows = read_metrics(wd / "metrics.jsonl")
    assert {r["run"] for r in rows} == {"logistic", "mlp", "cnn"}
    assert json.loads((wd / "config.json").read_text())["steps"] == 200


def test_finished_run_is_reused_and_conflicts_refused(smoke_run, capsys):
    wd, _ = smoke_run
    before = (wd / "claims.json").read_text()
    res = exp.run_experiment("mnist1d", "smoke", workdir=wd)
    assert json.dumps(res, sort_keys=True) == json.dumps(json.loads(before), sort_keys=True)
    code = main(["run", "mnist1d", "--smoke", "--workdir", str(wd), "--config.steps=100"])
    assert code == 2
    assert "different config" in capsys.readouterr().err
    assert (wd / "claims.json").read_text() == before  # nothing lost


def test_reused_run_rewrites_a_missing_or_damaged_report(smoke_run, tmp_path, capsys):
    import shutil

    wd = tmp_path / "w"
    shutil.copytree(smoke_run[0], wd)
    claims_before, report_before = (wd / "claims.json").read_bytes(), (wd / "report.md").read_text()
    victim = tmp_path / "victim.txt"
    victim.write_text("not the report")
    for damage in ("missing", "garbage", "truncated", "symlink"):
        if damage == "missing":
            (wd / "report.md").unlink()
        elif damage == "garbage":
            (wd / "report.md").write_bytes(b"\xff\xfe garbage \x00")
        elif damage == "truncated":
            (wd / "report.md").write_text(report_before[:40])
        else:
            (wd / "report.md").unlink()
            (wd / "report.md").symlink_to(victim)
        assert main(["run", "mnist1d", "--smoke", "--workdir", str(wd)]) in (0, 1)
        assert "reusing the finished run" in capsys.readouterr().err
        assert not (wd / "report.md").is_symlink() and (wd / "report.md").read_text() == report_before, damage
        assert (wd / "claims.json").read_bytes() == claims_before  # nothing else rewritten
    assert victim.read_text() == "not the report"


def test_reused_run_names_missing_or_damaged_figures(smoke_run, tmp_path, capsys):
    import shutil

    wd = tmp_path / "w"
    shutil.copytree(smoke_run[0], wd)
    claims_before = (wd / "claims.json").read_bytes()
    figs = json.loads(claims_before)["figures"]
    assert "figures/test_accuracy.png" in figs
    png = (wd / "figures/test_accuracy.png").read_bytes()
    for damaged in (b"garbage", png[: len(png) // 2], None):
        if damaged is None:
            (wd / "figures/test_accuracy.png").unlink()
        else:
            (wd / "figures/test_accuracy.png").write_bytes(damaged)
        with pytest.warns(UserWarning, match=r"figures/test_accuracy\.png\).*claims are intact.*--force to draw them"):
            assert main(["run", "mnist1d", "--smoke", "--workdir", str(wd)]) in (0, 1)
        report = (wd / "report.md").read_text()
        assert "figures/test_accuracy.png is missing or damaged; run the experiment again with `--force`" in report
        assert "![figures/test_accuracy.png]" not in report
        assert all(f"![{f}]({f})" in report for f in figs if f != "figures/test_accuracy.png")  # the intact ones shown
        assert (wd / "claims.json").read_bytes() == claims_before
    (wd / "figures/test_accuracy.png").write_bytes(png)  # put back: the report shows it again
    assert main(["run", "mnist1d", "--smoke", "--workdir", str(wd)]) in (0, 1)
    assert "![figures/test_accuracy.png](figures/test_accuracy.png)" in (wd / "report.md").read_text()


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "mnist1d" in out and "mnist1d_cnn" in out and "digits" in out
    assert "learning_rate (3), batch_size (3), steps (4)" in out  # the sweeps `nnbasics sweep --sweep` takes
    assert main(["list", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "mnist1d" in info["experiments"] and "spirals" in info["datasets"]
    from experiments import mnist1d

    assert info["sweeps"]["mnist1d"] == {k: len(v) for k, v in mnist1d.SWEEPS.items()}
    assert info["sweeps"]["momentum"] == {"dim": 3, "lecture_beta": 3}


@pytest.mark.parametrize(
    "argv,match",
    [
        (["run", "mnist1dd"], "did you mean 'mnist1d'"),
        (["run", "mnist1d", "--config.optimizer.learning_rat=0.1"], "did you mean 'optimizer.learning_rate'"),
        (["run", "mnist1d", "--config.optimizer.learning_rate=0"], "learning_rate must be > 0"),
        (["run", "mnist1d", "--config.batch_size=5000"], "larger than the training set"),
        (["run", "mnist1d", "--config.seeds=()"], "non-empty"),
        (["run", "mnist1d", "--config.models=('cnn','rnn')"], "unknown MNIST-1D model 'rnn'"),
        (["run", "mnist1d", "--config.data=mnist1"], "did you mean 'mnist1d'"),
        (["reproduce", "--only", "mnist1d,nope"], "unknown experiment 'nope'"),
        (["run", "mnist1d", "--seed-offset", "-1"], "--seed-offset must be a non-negative integer"),
        (["reproduce", "--seed-offset", "-3"], "--seed-offset must be a non-negative integer"),
        (["run", "mnist1d", "--seed-offset", "2147483647"], "--seed-offset 2147483647 moves config."),
    ],
)
def test_bad_input_is_rejected_before_anything_runs(argv, match, tmp_path, capsys):
    wd = tmp_path / "wd"
    code = main([*argv, "--workdir", str(wd)] if argv[0] == "run" else [*argv, "--root", str(tmp_path)])
    assert code == 2
    assert match in capsys.readouterr().err
    assert not (wd / "metrics.jsonl").exists()


def test_config_command_shows_overrides(capsys):
    assert main(["config", "mnist1d", "--quick", "--config.steps=7", "--config.seeds=(4,5)"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["steps"] == 7 and cfg["seeds"] == [4, 5]
    assert main(["config", "mnist1d", "--quick", "--config.seeds=(4,5)", "--seed-offset", "100"]) == 0
    assert json.loads(capsys.readouterr().out)["seeds"] == [104, 105]


def test_python_dash_m_entry_point(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-m", "experiments.mnist1d", "--smoke", "--quiet", "--workdir", str(tmp_path),
         "--config.models=('logistic',)", "--config.steps=20", "--config.eval_every=10"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode in (0, 1), out.stderr
    assert "test_accuracy_logistic" in out.stdout
    assert (tmp_path / "claims.json").exists()


def test_reproduce_writes_combined_report(tmp_path, monkeypatch):
    calls = []

    def fake_run(name, preset, overrides, workdir, force, **kw):
        calls.append((name, preset))
        return {"experiment": name, "seconds": 1.0, "figures": [],
                "claims": [{"id": "a", "claim": "c", "source": "s", "expected": "e", "measured": {"x": 1.0},
                            "verdict": "pass"}]}

    monkeypatch.setattr(exp, "run_experiment", fake_run)
    results, path = exp.reproduce("smoke", ["mnist1d"], tmp_path)
    assert calls == [("mnist1d", "smoke")]
    text = path.read_text()
    assert "1 of 1 claims pass" in text and "| mnist1d |" in text


def test_models_command(capsys):
    assert main(["models", "--json", "resnet20", "mnist1d_cnn"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"resnet20", "mnist1d_cnn"}
    assert by_name["mnist1d_cnn"]["params"] == 5210 and by_name["resnet20"]["params"] == 269722
    assert by_name["resnet20"]["macs"] > 0 and "input_shape" in by_name["resnet20"]
    assert main(["models", "resnet21"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_every_preset_and_sweep_point_of_every_experiment_validates():
    """`--full` and every named sweep must at least pass the checks `run` makes before compiling."""
    for name in exp.experiment_names():
        for preset in exp.PRESETS:
            exp.get_config(name, preset)
        mod = exp.load_experiment(name)
        for preset in ("full", "quick"):
            base = exp.get_config(name, preset)
            for points in getattr(mod, "SWEEPS", {}).values():
                for point in points:
                    cfg = config_lib.apply_dict(base, point)
                    for key, value in point.items():  # the point took effect
                        node = cfg
                        for part in key.split("."):
                            node = node[part]
                        assert node == value or list(node) == list(value), (name, key)
                    exp.validate(name, cfg)


def test_own_warnings_are_one_line_for_the_user():
    """A damaged cache set aside is reported as one 'nnbasics: warning:' line, without the source
    line Python prints; other libraries' warnings keep Python's format."""
    from nnbasics.cli import _format_warning
    from nnbasics.data import CorruptCacheWarning
    from nnbasics.engine.checkpoint import CorruptCheckpointWarning

    for category in (CorruptCacheWarning, CorruptCheckpointWarning):
        assert _format_warning("x.npz is damaged", category, "/a/b.py", 3, "code()") == "nnbasics: warning: x.npz is damaged\n"
    other = _format_warning("deprecated", DeprecationWarning, "/a/b.py", 3, "code()")
    assert "/a/b.py:3: DeprecationWarning: deprecated" in other


@pytest.mark.parametrize("platform", ["nonsense", "gpu"])
def test_a_backend_this_machine_lacks_is_one_line(platform, tmp_path):
    """JAX_PLATFORMS naming a backend that is not here: one line and exit 2, no traceback."""
    env = {**os.environ, "JAX_PLATFORMS": platform}
    out = subprocess.run([sys.executable, "-m", "nnbasics.cli", "run", "momentum", "--smoke", "--workdir",
                          str(tmp_path / "w")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert lines[-1].startswith("nnbasics: error: JAX could not start") and "JAX_PLATFORMS" in lines[-1], out.stderr
    assert not (tmp_path / "w" / "claims.json").exists()


def test_reproduce_prints_one_line_per_experiment_and_verbose_every_claim(tmp_path):
    """The terminal shows one line per experiment, then the claims that did not pass, the count and the
    report; --verbose adds every claim with its measurements. Progress lines are plain (no \\r) in a pipe."""
    cmd = [sys.executable, "-m", "nnbasics.cli", "reproduce", "--smoke", "--only", "momentum,backprop", "--jobs", "1",
           "--root", str(tmp_path)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode in (0, 1), out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("momentum ") and "claims pass" in lines[0]
    assert lines[1].startswith("backprop ") and "claims pass" in lines[1]
    summary = next(i for i, x in enumerate(lines) if " claims pass" in x and x[0].isdigit())
    assert all(x.startswith(("  FAIL", "  INCONCLUSIVE")) for x in lines[summary + 1:-1]) and lines[-1].startswith("report: ")
    assert "[PASS]" not in out.stdout and "\r" not in out.stderr
    assert len([x for x in out.stderr.splitlines() if x.strip()]) <= 3  # the plan and one line per experiment
    verbose = subprocess.run(cmd + ["--verbose"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    claims = json.loads((tmp_path / "claims.json").read_text())
    n = sum(len(r["claims"]) for r in claims["experiments"])
    assert sum(x.startswith("[") for x in verbose.stdout.splitlines()) == n  # every claim, reused runs included


def test_paper_preset_flag_and_the_fallback_to_full(capsys):
    """`--paper` picks the paper preset; an experiment without a paper scale returns its full config for it."""
    import json

    assert main(["config", "residual", "--paper"]) == 0
    paper = json.loads(capsys.readouterr().out)
    assert paper["width"] == 16 and paper["data_kwargs"]["size"] == 32
    assert main(["config", "residual", "--full"]) == 0
    assert json.loads(capsys.readouterr().out) != paper
    for name in ("mnist1d", "momentum"):
        assert exp.get_config(name, "paper").to_dict() == exp.get_config(name, "full").to_dict()
    assert "paper" in exp.PRESETS
