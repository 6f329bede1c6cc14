"""Time estimates: the committed table is complete and ordered, and `list`, `run` and `reproduce`
say what a preset costs (and warn, naming --quick, above an hour on a CPU) before they start."""

import json
import re

import pytest

from nnbasics.cli import main
from nnbasics.runs import estimate
from nnbasics.runs import experiment as exp

FAKE = {
    "machine": "a test CPU", "date": "2000-01-01", "commit": "0",
    "experiments": {
        "mnist1d": {"quick": {"seconds": 50.0, "how": "test"}, "full": {"seconds": 7200.0, "how": "test"},
                    "smoke": {"seconds": 3 * 3600.0, "how": "test"}},
        "momentum": {"quick": {"seconds": 3.0, "how": "test"}, "full": {"seconds": 3.0, "how": "test"}},
    },
}


@pytest.fixture
def fake_table(monkeypatch):
    monkeypatch.setattr(estimate, "table", lambda: FAKE)
    monkeypatch.setattr(estimate, "backend", lambda: "cpu")


def test_the_table_names_only_experiments_and_every_estimate_is_positive_quick_no_longer_than_full():
    """An experiment the table does not name has no estimate ('?': a new one needs no regenerated table)."""
    assert set(estimate.table()["experiments"]) <= set(exp.experiment_names())
    timed = [n for n in exp.experiment_names() if n in estimate.table()["experiments"]]
    assert len(timed) >= 19  # every experiment before the contract let one come without a time
    for name in timed:
        q, f = estimate.seconds(name, "quick"), estimate.seconds(name, "full")
        assert q is not None and f is not None, name
        assert 0 < q <= f, (name, q, f)
        if exp.get_config(name, "quick").to_dict() != exp.get_config(name, "full").to_dict():
            # Below ~20 s both presets are mostly compiling (perceptron_xor: 8.6 s each on one core,
            # cold cache), so only a longer full preset must be measurably longer than its quick one.
            assert q < f or f < 20, (name, q, f)
        else:
            assert q == f, name  # one preset, one number
        assert estimate.estimate(name, "full")["how"]


def test_the_table_names_its_machine_and_date():
    t = estimate.table()
    assert t["machine"] and t["date"] != "?" and t["commit"] != "?"


def test_format_duration():
    assert estimate.format_duration(None) == "?"
    assert estimate.format_duration(0.2) == "~1 s"
    assert estimate.format_duration(42) == "~42 s"
    assert estimate.format_duration(600) == "~10 min"
    assert estimate.format_duration(2 * 3600) == "~2.0 h"
    assert estimate.format_duration(39 * 3600) == "~39 h"


def test_long_run_warning_names_the_quick_alternative(fake_table):
    w = estimate.long_run_warning("mnist1d", "full")
    assert w.startswith("warning") and "~2.0 h" in w and "nnbasics run mnist1d --quick" in w and "~50 s" in w
    assert estimate.long_run_warning("mnist1d", "quick") is None  # 50 s
    assert estimate.long_run_warning("mnist1d", "full", backend="gpu") is None  # the CPU estimate says nothing there
    assert estimate.long_run_warning("residual", "full") is None  # not in the fake table: no number, no warning


def test_the_real_table_warns_for_a_long_full_preset():
    long = [n for n in exp.experiment_names() if (estimate.seconds(n, "full") or 0) > estimate.LONG_RUN_SECONDS]
    assert "cifar10_resnet" in long
    assert "--quick" in estimate.long_run_warning("cifar10_resnet", "full")
    assert "--quick" in estimate.long_run_warning("residual", "paper")  # the paper's scale: days on a CPU
    assert "--quick" in estimate.long_run_warning("loss_landscape", "paper")
    assert all(estimate.long_run_warning(n, "quick") is None for n in exp.experiment_names()
               if (estimate.seconds(n, "quick") or 0) <= estimate.LONG_RUN_SECONDS)
    # a full preset within the hour (loss_landscape's ~32 min) runs without a warning; the limit is the hour
    assert estimate.LONG_RUN_SECONDS == 3600
    assert 1800 < estimate.seconds("loss_landscape", "full") < 3600
    assert estimate.long_run_warning("loss_landscape", "full") is None


def test_run_prints_the_estimate_and_the_warning_then_proceeds(fake_table, monkeypatch, tmp_path, capsys):
    ran = []

    def fake_run(name, preset, *a, **k):
        ran.append((name, preset))
        return {"experiment": name, "preset": preset, "seconds": 1.0, "claims": [], "figures": []}

    monkeypatch.setattr(exp, "run_experiment", fake_run)
    assert main(["run", "mnist1d", "--smoke", "--workdir", str(tmp_path / "wd")]) == 0
    err = capsys.readouterr().err
    assert "mnist1d (smoke): estimated ~3.0 h on a CPU (a test CPU, measured 2000-01-01)" in err
    assert "warning" in err and "nnbasics run mnist1d --quick" in err
    assert ran == [("mnist1d", "smoke")]  # it proceeds
    # quiet hides the estimate line, not the warning
    assert main(["--quiet", "run", "mnist1d", "--smoke", "--workdir", str(tmp_path / "wd2")]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "estimated ~3.0 h on a CPU (" not in err
    assert main(["run", "momentum", "--workdir", str(tmp_path / "wd3")]) == 0
    err = capsys.readouterr().err
    assert "momentum (full): estimated ~3 s" in err and "warning" not in err


def test_list_shows_quick_full_and_paper_columns(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.strip().startswith("quick"))
    assert header.split() == ["quick", "full", "paper"]
    residual = next(line for line in out.splitlines() if line.strip().startswith("residual "))
    assert estimate.format_duration(estimate.seconds("residual", "paper")) in residual  # a scale of its own
    mnist1d = next(line for line in out.splitlines() if line.strip().startswith("mnist1d "))
    assert "= full" in mnist1d and estimate.seconds("mnist1d", "paper") is None
    for name in exp.experiment_names():
        row = next(line for line in out.splitlines() if line.strip().startswith(name + " "))
        columns = row[:row.index(exp.describe(name))]  # the name, quick, full, paper (the description follows)
        timed = estimate.estimate(name, "quick") is not None
        paper = estimate.estimate(name, "paper") is not None
        assert len(re.findall(r"~[\d.]+ (?:s|min|h) " if timed else r" \? ", columns)) == 2 + (timed and paper), row
    assert main(["list", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info["estimated_seconds"]) == set(exp.experiment_names())
    for name in ("residual", "loss_landscape"):  # a scale of their own beyond full
        assert info["estimated_seconds"][name]["paper"] > info["estimated_seconds"][name]["full"]
    assert all(v["quick"] > 0 and v["full"] > 0 for n, v in info["estimated_seconds"].items()
               if estimate.estimate(n, "quick") is not None)


def test_plan_lines_total_and_warning(fake_table):
    lines = estimate.plan_lines(["mnist1d", "momentum", "residual"], "full")
    assert lines[0].startswith("estimated time of the full preset on a CPU (a test CPU")
    assert any("mnist1d" in ln and "~2.0 h" in ln for ln in lines)
    total = next(ln for ln in lines if ln.strip().startswith("total"))
    assert "~2.0 h" in total and "1 without an estimate: residual" in total
    assert lines[-1].startswith("warning") and "mnist1d ~2.0 h" in lines[-1] and "reproduce --quick" in lines[-1]
    assert not any(ln.startswith("warning") for ln in estimate.plan_lines(["momentum"], "full"))


def test_countdown_refines_with_measured_speed(fake_table):
    c = estimate.Countdown(["momentum", "mnist1d"], "full")
    assert c.total == 7203.0
    # momentum took twice its estimate: the rest is scaled by 2
    assert c.done("momentum", elapsed=6.0, recorded=5.9) == "about 4.0 h left of ~2.0 h"
    c = estimate.Countdown(["momentum", "mnist1d"], "full")
    # a reused run (returns at once with its old seconds) does not count
    assert c.done("momentum", elapsed=0.01, recorded=3.0) == "about 2.0 h left of ~2.0 h"
    assert c.done("mnist1d", elapsed=0.02, recorded=7000.0) == "all done (estimated ~2.0 h in all)"


def test_presets_without_estimates_say_so(fake_table):
    lines = estimate.plan_lines(["residual", "agc"], "smoke")
    assert lines[-1].split() == ["total", "?", "(and", "2", "without", "an", "estimate:", "residual,", "agc)"]
    assert estimate.Countdown(["residual"], "smoke").done("residual", 1.0, 1.0) == "no time estimate"
    assert estimate.run_lines("residual", "smoke") == ["residual (smoke): no measured time estimate"]


def test_reproduce_prints_the_plan_and_what_is_left(fake_table, monkeypatch, tmp_path, capsys):
    from nnbasics import progress

    monkeypatch.setattr(progress, "_QUIET", False)  # the tests run quiet; whichever test ran before, this one is not
    monkeypatch.setattr(exp, "run_experiment", lambda name, preset, *a, **k: {
        "experiment": name, "preset": preset, "seconds": 1.0, "claims": [], "figures": []})
    monkeypatch.setattr(exp, "write_reports", lambda root, *a, **k: root / "report.md")
    exp.reproduce("full", ["momentum", "mnist1d"], tmp_path)
    err = capsys.readouterr().err
    assert "estimated time of the full preset" in err and "warning: this reproduction" in err
    assert "[1/2] momentum: " in err or "[1/2] mnist1d: " in err  # one line per experiment, when it is done
    assert "left of ~2.0 h" in err


def test_progress_is_plain_lines_when_not_a_terminal():
    """Output to a file or a pipe (a CI log, nohup, a notebook) gets whole lines, no carriage returns."""
    import io

    from nnbasics.progress import PlainProgress

    out = io.StringIO()
    bar = PlainProgress(200, "resnet20", "step", delay=0.0, every=0.0, stream=out)
    for _ in range(4):
        bar.update(50)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("resnet20: 50/200 steps (25%), ") and lines[3].startswith("resnet20: 200/200 steps (100%)")
    assert len(lines) == 5  # one per update here (every=0) and one at the close
    quiet = io.StringIO()
    bar = PlainProgress(10, "mlp", "step", delay=60.0, stream=quiet)  # a run shorter than the delay stays silent
    bar.update(10)
    bar.close()
    assert quiet.getvalue() == ""


def test_progress_outside_a_terminal_is_plain(monkeypatch):
    import io

    from nnbasics import progress

    monkeypatch.setattr(progress.sys, "stderr", io.StringIO())
    monkeypatch.setattr(progress, "_QUIET", False)
    assert isinstance(progress.progress(10, "x"), progress.PlainProgress)
    monkeypatch.setattr(progress, "_QUIET", True)
    assert not isinstance(progress.progress(10, "x"), progress.PlainProgress)


def test_quieted_restores_the_setting():
    from nnbasics import progress

    before = progress._QUIET
    with progress.quieted(True):
        assert progress._QUIET
    assert progress._QUIET == before
    with progress.quieted(False):
        assert progress._QUIET == before


def test_an_entry_measured_elsewhere_names_its_own_machine(monkeypatch):
    """A row measured later on another machine carries `machine`; run's estimate line and the long-run
    warning name it instead of the table's."""
    from nnbasics.runs import estimate as E

    fake = {"machine": "the table's CPU", "date": "2026-01-01", "commit": "x", "experiments": {
        "a": {"quick": {"seconds": 10.0, "how": "h"},
              "full": {"seconds": 7200.0, "how": "h", "machine": "one core of another CPU, measured 2026-02-02"}}}}
    monkeypatch.setattr(E, "table", lambda: fake)
    assert E.machine() == "the table's CPU, measured 2026-01-01"
    assert E.machine("a", "quick") == "the table's CPU, measured 2026-01-01"
    assert E.machine("a", "full") == "one core of another CPU, measured 2026-02-02"
    assert "(one core of another CPU, measured 2026-02-02)" in E.run_lines("a", "full")[0]
    warning = E.long_run_warning("a", "full")
    assert "~2.0 h on a CPU (one core of another CPU" in warning and "--quick` takes ~10 s" in warning


def test_the_accelerator_estimate_names_the_assumed_rate_and_a_rebuild_keeps_it():
    # the committed table carries the assumption its accelerator seconds were computed with
    assumed = estimate.table()["assumed_accelerator_flops"]
    assert assumed == 20e12
    e = estimate.estimate("residual", "paper")
    assert e["accelerator_seconds"] == pytest.approx(e["flops"] / assumed, rel=0.01)
    lines = estimate.run_lines("residual", "paper", backend="gpu")
    assert any("at an assumed 20 TFLOP/s" in line for line in lines), lines
    # a rebuild without new probe rates keeps the old table's assumption; new rates replace it
    from nnbasics.runs import time_table
    args = dict(quick_root="/nonexistent", full_root="/nonexistent", machine_name="m", date="d", commit="c")
    kept = time_table.build_table(rates=None, old=estimate.table(), **args)
    assert kept["assumed_accelerator_flops"] == assumed
    new = time_table.build_table(rates={"experiments": {}, "assumed_accelerator_flops": 1e14}, old=estimate.table(),
                                 **args)
    assert new["assumed_accelerator_flops"] == 1e14
    row = next(r for r in time_table.full_preset_table("/nonexistent/claims.json").splitlines()
               if r.startswith("| cifar10_resnet |"))
    assert "at an assumed 20 TFLOP/s" in row, row
