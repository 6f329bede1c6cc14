"""The experiment contract (nnbasics/runs/contract.py): one function checks it with errors that name
what is missing, and a new one-file experiment (the template of docs/adding_an_experiment.md)
runs, lists and plans with nothing else edited or regenerated."""

import json
import pathlib
import re
import types

import pytest

import experiments
from nnbasics.cli import main
from nnbasics.runs import claims, contract, estimate
from nnbasics.runs import experiment as exp

DOC = pathlib.Path(__file__).parents[1] / "docs" / "adding_an_experiment.md"


def _module(**attrs) -> types.ModuleType:
    mod = types.ModuleType("experiments.probe")
    base = {"get_config": lambda preset="full": None, "run": lambda config, workdir: [],
            "THRESHOLDS": {"x": claims.Threshold(">=", 1.0, "why")}}
    for k, v in {**base, **attrs}.items():
        if v is not None:
            setattr(mod, k, v)
    return mod


def test_a_complete_module_gives_its_contract_with_defaults():
    e = contract.check_experiment(_module(TOPIC="basics", SWEEPS={"lr": [{"optimizer.learning_rate": 0.1}]}))
    assert (e.name, e.topic, e.order, e.reproduce, e.validate) == ("probe", "basics", 1000, True, None)
    assert e.sweeps == {"lr": [{"optimizer.learning_rate": 0.1}]} and e.thresholds["x"].value == 1.0


@pytest.mark.parametrize("attrs, message", [
    ({"run": None}, "defines no `run`"),
    ({"get_config": None}, "defines no `get_config`"),
    ({"THRESHOLDS": None}, "defines no `THRESHOLDS`"),
    ({"THRESHOLDS": {"x": 1.0}}, r"THRESHOLDS\['x'\] is a float, not a nnbasics.runs.claims.Threshold"),
    ({"THRESHOLDS": {}}, "must be a non-empty dict"),
    ({"run": lambda config: []}, r"`run\(config\)` cannot be called with 2 argument"),
    ({"run": 3}, "`run` is a int, not a function"),
    ({"TOPIC": "loss"}, "valid topics: basics, optimization, convolution, architectures, normalization, other"),
    ({"ORDER": "first"}, "ORDER must be a number"),
    ({"REPRODUCE": "no"}, "REPRODUCE must be True or False"),
    ({"SWEEPS": {"lr": {"optimizer.learning_rate": 0.1}}}, "SWEEPS must be"),
    ({"validate": "strict"}, "`validate` is a str"),
])
def test_errors_name_what_is_missing(attrs, message):
    with pytest.raises(contract.ContractError, match=message) as e:
        contract.check_experiment(_module(**attrs))
    assert "experiments.probe" in str(e.value) and "adding_an_experiment.md" in str(e.value)


def test_every_experiment_keeps_the_contract():
    for name in exp.experiment_names():
        e = exp.experiment(name)
        assert e.name == name and e.module is exp.load_experiment(name) and e.description == exp.describe(name)
        assert e.topic in contract.TOPICS and e.thresholds == exp.thresholds_of(name)


def _template(block: int) -> str:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[block]


@pytest.fixture
def new_experiment(tmp_path, monkeypatch):
    """The doc's template saved as one file in a folder of the experiments package (as a user would
    add experiments/NAME.py); nothing else is touched."""
    name = "zz_template_probe"
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / f"{name}.py").write_text(_template(0).replace("NAME", name))
    monkeypatch.setattr(experiments, "__path__", [*experiments.__path__, str(folder)])
    yield name
    import sys

    sys.modules.pop(f"experiments.{name}", None)


def test_a_new_one_file_experiment_runs_lists_and_plans(new_experiment, tmp_path, capsys):
    name = new_experiment
    assert name in exp.experiment_names() and exp.experiment_names()[-1] == name  # ORDER 999: last
    assert estimate.estimate(name, "quick") is None  # never timed, nothing regenerated
    # the doc's smoke test, run as written
    namespace = {}
    exec(compile(_template(1).replace("NAME", name), "template_test", "exec"), namespace)
    namespace["test_smoke"](tmp_path / "t")
    # the command line: list shows '?', run --smoke passes its claim, reproduce's plan says '?'
    assert main(["list"]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith(name + " "))
    assert row.split()[1:3] == ["?", "?"] and "A two-layer MLP separates XOR" in row
    assert main(["list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["estimated_seconds"][name] == {"quick": None, "full": None, "paper": None}
    assert main(["run", name, "--smoke", "--workdir", str(tmp_path / "wd")]) == 0
    stored = json.loads((tmp_path / "wd" / "claims.json").read_text())
    [c] = stored["claims"]
    assert c["verdict"] == "pass" and c["expected"] == "mean accuracy over seeds > 75%"
    assert c["checks"][0]["samples"] == [100.0, 100.0, 100.0] and stored["topic"] == "basics"
    assert (tmp_path / "wd" / "figures" / "accuracy.png").exists()
    plan = estimate.plan_lines(["momentum", name], "quick")
    assert any(ln.split() == [name, "?"] for ln in plan)
    assert f"1 without an estimate: {name}" in plan[-1] or f"1 without an estimate: {name}" in plan[-2]
