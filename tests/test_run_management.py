"""Run management: one writer per workdir, partial reproductions that keep the fuller report,
`nnbasics readme` refusing to shrink the README, `nnbasics report` re-judging without training."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nnbasics.cli import main
from nnbasics.runs import claims
from nnbasics.runs import experiment as exp
from nnbasics.runs import workdir as workdir_lib


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    wd = tmp_path / "w"
    with workdir_lib.exclusive(wd):
        with pytest.raises(workdir_lib.WorkdirBusy, match=f"pid {os.getpid()}"):
            exp.run_experiment("mnist1d", "smoke", workdir=wd)
        assert main(["run", "mnist1d", "--smoke", "--workdir", str(wd), "--quiet"]) == 2
    assert not (wd / "claims.json").exists()


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    wd = tmp_path / "w"
    code = ("import sys, time; from nnbasics.runs import workdir\n"
            "with workdir.exclusive(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(wd)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(workdir_lib.WorkdirBusy, match=f"pid {p.pid}"):
            with workdir_lib.exclusive(wd):
                pass
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    with workdir_lib.exclusive(wd):  # the kernel dropped the dead holder's lock
        assert str(os.getpid()) in (wd / ".lock").read_text()


def test_lock_that_is_a_symlink_is_never_followed(tmp_path, capsys):
    wd, victim = tmp_path / "w", tmp_path / "precious.txt"
    wd.mkdir()
    victim.write_text("someone else's data")
    (wd / ".lock").symlink_to(victim)
    with pytest.raises(workdir_lib.WorkdirUnusable, match=r"\.lock is a symbolic link .*precious\.txt.*remove it"):
        with workdir_lib.exclusive(wd):
            pass
    assert main(["run", "mnist1d", "--smoke", "--workdir", str(wd), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "symbolic link" in err and str(wd / ".lock") in err
    assert victim.read_text() == "someone else's data"  # nothing written through the link
    assert (wd / ".lock").is_symlink() and not (wd / "claims.json").exists()
    (wd / ".lock").unlink()
    (wd / ".lock").symlink_to(tmp_path / "nowhere")  # a dangling link is not created either
    with pytest.raises(workdir_lib.WorkdirUnusable, match="symbolic link"):
        with workdir_lib.exclusive(wd):
            pass
    assert not (tmp_path / "nowhere").exists()


def test_lock_that_is_a_directory_is_a_clear_error(tmp_path, capsys):
    wd = tmp_path / "w"
    (wd / ".lock").mkdir(parents=True)
    (wd / ".lock" / "kept").write_text("x")
    with pytest.raises(workdir_lib.WorkdirUnusable, match=r"\.lock is a directory, not a regular file.*remove it"):
        with workdir_lib.exclusive(wd):
            pass
    assert main(["run", "mnist1d", "--smoke", "--workdir", str(wd), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "IsADirectoryError" not in err and "is a directory" in err
    assert (wd / ".lock" / "kept").read_text() == "x"


def _result(name, verdict="pass"):
    return {"experiment": name, "seconds": 1.0, "figures": [], "preset": "quick",
            "claims": [claims.claim("c", "a claim", "s", "e", {"v": 1.0}, passed=verdict == "pass")]}


def test_partial_reproduction_keeps_the_other_experiments(tmp_path):
    names = exp.experiment_names()
    exp.write_reports(tmp_path, [_result(n) for n in names[:3]], [f"{n}-quick" for n in names[:3]])
    merged, dirs = exp._merge_earlier(tmp_path, [_result(names[1], "fail")], [f"{names[1]}-quick"], 0, names)
    assert [r["experiment"] for r in merged] == names[:3]
    assert merged[1]["claims"][0]["verdict"] == "fail" and merged[0]["claims"][0]["verdict"] == "pass"
    assert dirs == [f"{n}-quick" for n in names[:3]]


def _finished_root(root, names, preset="smoke"):
    """A reproduce root whose experiments `names` finished: their workdirs and the combined report."""
    results = [dict(_result(n), preset=preset) for n in names]
    for r in results:
        (root / f"{r['experiment']}-{preset}").mkdir(parents=True)
        (root / f"{r['experiment']}-{preset}" / "claims.json").write_text(json.dumps(r))
    exp.write_reports(root, results, [f"{n}-{preset}" for n in names])
    return results


@pytest.mark.parametrize("damage", [b"{trunc", b'{"experiments": 3, "workdirs": []}'])
def test_damaged_combined_claims_is_rebuilt_from_the_workdirs_by_a_partial_reproduce(tmp_path, capsys, damage):
    others = [n for n in exp.experiment_names() if n != "mnist1d"][:3]
    _finished_root(tmp_path, others)
    (tmp_path / "claims.json").write_bytes(damage)
    with pytest.warns(UserWarning, match=r"claims\.json is damaged .*kept it as claims\.json\.\S+\.damaged and rebuilt "
                                         r"the combined report from the 4 intact work directories"):
        main(["reproduce", "--smoke", "--only", "mnist1d", "--root", str(tmp_path), "--jobs", "1", "--quiet"])
    doc = json.loads((tmp_path / "claims.json").read_text())
    order = exp.experiment_names()
    assert [r["experiment"] for r in doc["experiments"]] == sorted([*others, "mnist1d"], key=order.index)
    assert doc["workdirs"] == [f"{r['experiment']}-smoke" for r in doc["experiments"]]
    assert all(f"| {n} |" in (tmp_path / "report.md").read_text() for n in [*others, "mnist1d"])
    assert [p.read_bytes() for p in tmp_path.glob("claims.json.*.damaged")] == [damage]  # nothing lost


def test_report_root_rebuilds_a_damaged_combined_claims_from_the_workdirs(tmp_path, capsys):
    names = exp.experiment_names()[:3]
    results = _finished_root(tmp_path, names, "quick")
    (tmp_path / "quick-but-foreign").mkdir()  # not a default workdir: not taken
    (tmp_path / "quick-but-foreign" / "claims.json").write_text(json.dumps(dict(_result(names[0]), preset="quick")))
    (tmp_path / "claims.json").write_text('{"experiments": [')
    with pytest.warns(UserWarning, match=r"claims\.json is damaged.*rebuilt the combined report from the 3 intact"):
        assert main(["report", "--root", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "claims.json").read_text())
    assert [r["experiment"] for r in doc["experiments"]] == names and doc["workdirs"] == [f"{n}-quick" for n in names]
    assert [r["claims"] for r in doc["experiments"]] == [r["claims"] for r in results]
    assert "3 of 3 claims pass over 3 experiments" in (tmp_path / "report.md").read_text()
    assert len(list(tmp_path.glob("claims.json.*.damaged"))) == 1


def test_readme_is_not_shrunk_without_force(tmp_path, capsys):
    exp.write_reports(tmp_path, [_result("mnist1d")], ["mnist1d-quick"])
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- results:begin -->\nold table\n<!-- results:end -->\n")
    assert main(["readme", "--root", str(tmp_path), "--readme", str(readme)]) == 2
    assert "covers 1 of the" in capsys.readouterr().err and "old table" in readme.read_text()
    assert main(["readme", "--root", str(tmp_path), "--readme", str(readme), "--force"]) == 0
    assert "old table" not in readme.read_text()


def test_report_rejudges_stored_measurements(tmp_path, capsys):
    """A stored verdict that its own samples contradict is recomputed; no training happens."""
    wd = tmp_path / "mnist1d-quick"
    wd.mkdir()
    stored = claims.claim("g", "gain", "s", ">= 1", {}, checks=[claims.check("unlisted_gain", [0.1, 0.2, 0.15],
                                                                   claims.Threshold(">=", 1.0))])
    assert stored["verdict"] == "fail"
    stored["verdict"] = "pass"  # as if written by an older, wrong rule
    doc = {"experiment": "mnist1d", "preset": "quick", "seconds": 1.0, "figures": [], "claims": [stored]}
    (wd / "claims.json").write_text(json.dumps(doc))
    t0 = time.perf_counter()
    assert main(["report", "--root", str(tmp_path)]) == 1
    assert time.perf_counter() - t0 < 30
    out = capsys.readouterr().out
    assert "0 of 1 claims pass (1 failed)" in out and "unlisted_gain = 0.15" in out
    assert json.loads((wd / "claims.json").read_text())["claims"][0]["verdict"] == "fail"
    assert "**FAIL**" in (wd / "report.md").read_text()


def test_html_from_a_claims_json_is_inert_in_every_report_md(tmp_path, capsys):
    """report.md of a work directory and the combined report.md escape HTML as collect.md and report.html do,
    while the `<=` of an honest check stays as it is."""
    wd = tmp_path / "mnist1d-quick"
    wd.mkdir()
    evil = claims.claim("x<b>", "<script>alert(1)</script> gain", "<img src=x onerror=alert(2)>", "&amp; <!-- c -->",
                        {"<iframe src=//e>": 1.0}, checks=[claims.check("gap", [0.1, 0.2, 0.15], claims.Threshold("<=", 1.0))])
    doc = {"experiment": "mnist1d", "preset": "quick", "seconds": 1.0, "figures": ["<svg onload=alert(3)>.png"],
           "claims": [evil]}
    (wd / "claims.json").write_text(json.dumps(doc))
    (wd / "<svg onload=alert(3)>.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(12) + b"IEND\xaeB`\x82")  # shown
    exp.write_reports(tmp_path, [doc], ["mnist1d-quick"])
    assert main(["report", "--root", str(tmp_path)]) == 0
    for md in (wd / "report.md", tmp_path / "report.md"):
        text = md.read_text()
        for tag in ("<script", "<img", "<iframe", "<svg", "<!--", "<b>", "&amp; "):
            assert tag not in text, (md, tag)
        assert "&lt;script>alert(1)&lt;/script> gain" in text and "&amp;amp; &lt;!-- c -->" in text
        assert "(n=3) <= 1" in text  # an honest comparison is not rewritten
    assert "(&lt;svg%20onload=alert%283%29>.png)" in (wd / "report.md").read_text()  # a link that cannot break out


@pytest.mark.parametrize("override, words", [
    ("--config.seeds=(-1,)", "config.seeds must hold integers between 0 and 2147483647"),
    ("--config.seeds=(123456789012345678901,)", "config.seeds must hold integers between 0"),
    ("--config.optimizer.learning_rate=1e999", "config.optimizer.learning_rate must be finite and > 0"),
    ("--config.steps=99999999999999999999", "config.steps must be an integer between 1 and 1,000,000,000"),
])
def test_bad_values_are_refused_with_the_valid_range(override, words, capsys, tmp_path):
    assert main(["run", "mnist1d", "--smoke", "--workdir", str(tmp_path / "w"), override]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_results_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        workdir_lib.atomic_write_json(tmp_path / "claims.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "claims.json").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing_key", "wrong_shape", "nan"])
def test_damaged_data_cache_is_set_aside_and_rebuilt(damage, tmp_path, monkeypatch):
    import numpy as np

    from nnbasics.data import CorruptCacheWarning, load_dataset

    monkeypatch.setenv("NNBASICS_CACHE", str(tmp_path))
    good = load_dataset("photos", n_train=20, n_test=10, size=8)
    (path,) = tmp_path.glob("photos_*.npz")
    arrays = dict(np.load(path))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file")
    else:
        if damage == "missing_key":
            del arrays["y_test"]
        elif damage == "wrong_shape":
            arrays["x_train"] = arrays["x_train"][:5]
        else:
            arrays["x_test"][0, 0, 0, 0] = np.nan
        np.savez(path, **arrays)
    with pytest.warns(CorruptCacheWarning, match=path.name):
        again = load_dataset("photos", n_train=20, n_test=10, size=8)
    np.testing.assert_array_equal(again.x_train, good.x_train)
    assert len(list(tmp_path.glob("photos_*.npz.corrupt-*"))) == 1 and path.exists()


def test_model_statistics_are_traced_once_and_cached(tmp_path, monkeypatch):
    from nnbasics.analysis import model_stats as ms

    monkeypatch.setenv("NNBASICS_CACHE", str(tmp_path))
    monkeypatch.setattr(ms, "_STATS", None)
    first = ms.model_stats("resnet20")
    assert first.params == 269722 and first.receptive_field is not None
    assert len(list(tmp_path.glob("model_stats-*.json"))) == 1
    monkeypatch.setattr(ms, "_STATS", None)  # a new process: read back from disk, no tracing

    def no_trace(*a, **k):
        raise AssertionError("traced again")

    monkeypatch.setattr(ms, "_trace_stats", no_trace)
    assert ms.model_stats("resnet20") == first


def test_robustness_table_counts_verdicts(tmp_path, capsys):
    from nnbasics.runs.report import robustness_table

    r = _result("mnist1d")
    r["claims"].append(claims.claim("d", "b", "s", "e", {},
                                    checks=[claims.check("x", [0.5, 1.5, 1.2], claims.Threshold(">=", 1.0))]))
    r["versions"] = {"cpus": "1", "cpu_flags": "avx2", "devices": "8"}
    table = robustness_table([("`runs/claims-seed100.json`", {"experiments": [r], "seed_offset": 100})])
    assert "| `runs/claims-seed100.json` | 100 | 8 | 1 | avx2 | 1 of 2 | 0 | 1 |" in table
    # the threads XLA ran the operations on (what the numbers depend on), not the cores the process had
    r["versions"]["cpus"], r["cores"] = "2", 1
    assert "| one thread | 0 | 8 | 1 | avx2 |" in robustness_table([("one thread", {"experiments": [r]})])
    r["versions"]["onednn"] = "2023.2.0"  # a run whose convolutions ran on the oneDNN extra says so
    assert "| onednn | 0 | 8 | 1 | avx2, oneDNN 2023.2.0 convs |" in robustness_table([("onednn", {"experiments": [r]})])
    del r["versions"]["onednn"]
    exp.write_reports(tmp_path, [_result(n) for n in exp.experiment_names()], exp.experiment_names())
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:begin -->\n<!-- results:end -->\n<!-- robustness:begin -->\nold\n<!-- robustness:end -->\n")
    assert main(["readme", "--root", str(tmp_path), "--readme", str(readme)]) == 0
    assert "old" not in readme.read_text() and "| 0 | ? | ? | ? | 18 of 18 |" in readme.read_text().replace(
        f"{len(exp.experiment_names())} of {len(exp.experiment_names())}", "18 of 18")


SMALL_MNIST1D = ["steps=200", "models=('mlp',)"]


@pytest.mark.parametrize("damage", ["cut_mid_line", "rows_missing"])
def test_finished_run_with_damaged_metrics_is_rebuilt_from_checkpoints_or_refused(tmp_path, damage, capsys):
    """A finished run whose metrics.jsonl was cut or lost rows is not reused as if intact: with
    checkpoints its rows are rebuilt (no training), without it is refused naming the file and --force."""
    def cut(wd):
        text = (wd / "metrics.jsonl").read_text()
        (wd / "metrics.jsonl").write_text(text[:len(text) // 2] if damage == "cut_mid_line" else text.splitlines(True)[0])
        return text

    wd = tmp_path / "ckpt"
    exp.run_experiment("mnist1d", "smoke", SMALL_MNIST1D, workdir=wd, checkpoint_every=100)
    full = cut(wd)
    again = exp.run_experiment("mnist1d", "smoke", SMALL_MNIST1D, workdir=wd, checkpoint_every=100)
    strip = [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in full.splitlines()]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in workdir_lib.read_metrics(wd / "metrics.jsonl")] == strip
    assert len(list(wd.glob("metrics.jsonl.*.damaged"))) == 1  # the damaged file is kept aside
    assert again["metrics_file"] == workdir_lib.metrics_digest(wd / "metrics.jsonl")
    assert exp.run_experiment("mnist1d", "smoke", SMALL_MNIST1D, workdir=wd, checkpoint_every=100) == again  # reused

    bare = tmp_path / "bare"
    exp.run_experiment("mnist1d", "smoke", SMALL_MNIST1D, workdir=bare)
    cut(bare)
    before = {p.name: p.read_bytes() for p in bare.iterdir() if p.is_file() and p.name != ".lock"}
    with pytest.raises(exp.WorkdirConflict, match=f"{bare / 'metrics.jsonl'} (has 1 unreadable|has 1 rows).*--force"):
        exp.run_experiment("mnist1d", "smoke", SMALL_MNIST1D, workdir=bare)
    args = ["run", "mnist1d", "--smoke", "--quiet", "--workdir", str(bare), *(f"--config.{o}" for o in SMALL_MNIST1D)]
    assert main(args) == 2
    assert "metrics.jsonl" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in bare.iterdir() if p.is_file() and p.name != ".lock"} == before  # untouched
    assert main([*args, "--force"]) in (0, 1)
    assert workdir_lib.metrics_damage(bare / "metrics.jsonl", json.loads((bare / "claims.json").read_text())[
        "metrics_file"]) is None


def test_both_receptive_field_definitions_are_named_in_both_outputs(tmp_path):
    """`nnbasics models` (last feature map, after pooling: AlexNet 195 px) and the receptive_fields
    experiment (up to the last convolution: 163 px) each say which one they report and name the other."""
    from nnbasics.runs.models_table import models_table

    text = models_table(False, ["alexnet"])
    assert "RF (last map)" in text and "195 px" in text and "163 px at conv5" in text and "after any pooling" in text
    doc = exp.run_experiment("receptive_fields", "smoke", workdir=tmp_path)
    rf = next(c for c in doc["claims"] if c["id"] == "registry_receptive_fields")
    assert "up to its last convolution, before any pooling" in rf["claim"] and "nnbasics models" in rf["claim"]
    assert "AlexNet conv5 163" in rf["source"]


@pytest.mark.parametrize("damage", ["config_garbage", "claims_truncated", "claims_a_list", "metrics_a_directory"])
def test_damaged_files_of_a_finished_run_are_refused_naming_them(tmp_path, capsys, damage):
    """Garbage in a finished run's config.json or claims.json, or a metrics.jsonl that is a directory:
    rc 2 and a message naming the file and --force, never a traceback; --force then runs again."""
    wd = tmp_path / "w"
    args = ["run", "mnist1d", "--smoke", "--quiet", "--workdir", str(wd), *(f"--config.{o}" for o in SMALL_MNIST1D)]
    assert main(args) in (0, 1)
    name = {"config_garbage": "config.json", "claims_truncated": "claims.json", "claims_a_list": "claims.json",
            "metrics_a_directory": "metrics.jsonl"}[damage]
    path = wd / name
    if damage == "metrics_a_directory":
        path.unlink()
        path.mkdir()
    else:
        path.write_text({"config_garbage": "{garbage", "claims_truncated": path.read_text()[:40],
                         "claims_a_list": "[]"}[damage])
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "--force" in err and "Traceback" not in err
    assert main([*args, "--force"]) in (0, 1)


def test_report_and_readme_refuse_damaged_claims_files_naming_them(tmp_path, capsys):
    exp.write_reports(tmp_path, [_result("mnist1d")], ["mnist1d-quick"])
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "claims.json").write_text('{"experiment": "mnist1d", "claims": 3}')
    before = (tmp_path / "report.md").read_text()
    assert main(["report", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'x' / 'claims.json'} is damaged" in err and "Traceback" not in err
    assert (tmp_path / "report.md").read_text() == before  # nothing rewritten
    (tmp_path / "claims.json").write_text("{trunc")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n")
    assert main(["readme", "--root", str(tmp_path), "--readme", str(readme)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'claims.json'} is damaged" in err and "Traceback" not in err
    assert readme.read_text() == "# x\n"


def test_readme_without_the_results_markers_is_a_clear_error(tmp_path, capsys):
    exp.write_reports(tmp_path, [_result("mnist1d")], ["mnist1d-quick"])
    readme = tmp_path / "README.md"
    for text, why in [("# x\nno markers\n", "has no <!-- results:begin --> ... <!-- results:end --> section"),
                      ("# x\n<!-- results:begin -->\n", "has <!-- results:begin --> but not <!-- results:end -->"),
                      ("<!-- results:end -->\n<!-- results:begin -->\n", "has <!-- results:end --> before"),
                      ("<!-- results:begin -->\n<!-- results:end -->\n<!-- robustness:begin -->\n",
                       "has <!-- robustness:begin --> but not <!-- robustness:end -->")]:
        readme.write_text(text)
        assert main(["readme", "--root", str(tmp_path), "--readme", str(readme), "--force"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and "ValueError" not in err
        assert f"the README {readme} {why}" in err and "add a line <!-- results:begin -->" in err
        assert readme.read_text() == text  # untouched
        assert not (tmp_path / "docs").exists()  # no featured figure copied beside it either


def test_report_names_the_work_directory_claims_of_an_unknown_experiment(tmp_path, capsys):
    exp.write_reports(tmp_path, [_result("mnist1d")], ["mnist1d-quick"])
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "claims.json").write_text(json.dumps(dict(_result("mnist1d"), experiment="no_such_thing")))
    before = (tmp_path / "report.md").read_text()
    assert main(["report", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'x' / 'claims.json'} is damaged or foreign" in err
    assert "no_such_thing" in err and "move it out of the way" in err
    assert (tmp_path / "report.md").read_text() == before


def test_long_values_are_cut_short_and_a_negative_shard_is_named(tmp_path, capsys):
    assert main(["config", "mnist1d", "--smoke", "--config.optimizer.name=" + "x" * 100_000]) == 2
    err = capsys.readouterr().err
    assert len(err) < 600 and "unknown optimizer 'xxxx" in err and "... (100,002 characters)" in err
    assert "Valid optimizers: adam" in err
    assert main(["config", "mnist1d", "--smoke", "--config.steps=" + "9" * 100_000]) == 2
    assert len(capsys.readouterr().err) < 600
    assert main(["sweep", "mnist1d", "--sweep", "learning_rate", "--smoke", "--shard", "-1/2", "--root",
                 str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "--shard must look like I/N with 0 <= I < N (e.g. 0/4), got '-1/2'" in err and "expected one argument" not in err


def test_unusable_data_cache_directory_is_a_clear_error(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setenv("NNBASICS_CACHE", str(blocker / "cache"))
    assert main(["run", "mnist1d", "--smoke", "--quiet", "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert f"cannot create the data cache directory {blocker / 'cache'}" in err and "NNBASICS_CACHE" in err


@pytest.mark.parametrize("args,words", [
    (["--config.seeds=(0, 0)"], "config.seeds must hold distinct seeds"),
    (["--config.models=('mlp', 'mlp')"], "config.models names a model twice"),
    (["--workdir", ""], "--workdir is empty"),
])
def test_repeated_seeds_or_models_and_an_empty_workdir_are_refused(tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)  # an empty --workdir used to write the run into the current directory
    wd = [] if "--workdir" in args else ["--workdir", str(tmp_path / "w")]
    assert main(["run", "mnist1d", "--smoke", "--quiet", *wd, *args]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.json"))


def test_reproduce_only_with_no_names_is_refused(tmp_path, capsys):
    assert main(["reproduce", "--smoke", "--only", ",", "--root", str(tmp_path)]) == 2
    assert "--only names no experiment" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_reproduce_only_with_an_empty_string_is_refused(tmp_path, capsys):
    for only in ("", " ", " , "):  # an empty shell variable: not "all 18 experiments" by accident
        assert main(["reproduce", "--smoke", "--only", only, "--root", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--only names no experiment" in err and "nnbasics list" in err
    assert not list(tmp_path.iterdir())
