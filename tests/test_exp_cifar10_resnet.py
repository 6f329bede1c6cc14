"""cifar10_resnet's claims by preset: the paper's error (full), below chance (quick), runs (smoke)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnbasics.engine import TrainResult
from nnbasics.runs.experiment import get_config, load_experiment


def _result(train_loss, test_acc, steps=(500, 1000, 1500, 2000)) -> TrainResult:
    """A TrainResult with one history row per step: train_loss[point][seed], test_acc[seed] at the end."""
    rows = [{"step": s, "train_loss": list(map(float, tl)), "test_loss": [1.0] * len(tl),
             "test_accuracy": list(map(float, test_acc))} for s, tl in zip(steps, train_loss)]
    return TrainResult(history=rows, state=None, members=[], seconds=1.0, compile_seconds=0.0)


def test_presets_claim_what_they_can_show():
    assert get_config("cifar10_resnet", "full").claim == "paper"
    assert len(get_config("cifar10_resnet", "full").seeds) == 5  # the paper's 5 runs
    assert get_config("cifar10_resnet", "quick").claim == "trains"
    assert get_config("cifar10_resnet", "smoke").claim == "runs"
    for preset in ("full", "quick", "smoke"):
        assert "tolerance" not in get_config("cifar10_resnet", preset)
    th = load_experiment("cifar10_resnet").THRESHOLDS
    assert th["test_error_resnet20"].value == pytest.approx(9.25)  # 8.75 + 0.5
    assert th["train_loss_below_chance"].value == pytest.approx(math.log(10), abs=1e-4)


def test_paper_claim_is_decided_by_the_interval_over_seeds():
    mod = load_experiment("cifar10_resnet")
    cfg = get_config("cifar10_resnet", "full")
    good = mod._paper_claim("resnet20", _result([[0.1] * 5] * 4, [0.912, 0.913, 0.911, 0.914, 0.912]), cfg)
    assert good["verdict"] == "pass" and good["checks"][0]["mean"] == pytest.approx(8.76, abs=1e-9)
    bad = mod._paper_claim("resnet20", _result([[0.1] * 5] * 4, [0.89, 0.891, 0.889, 0.89, 0.892]), cfg)
    assert bad["verdict"] == "fail"  # 11% error: the interval lies above 9.25


def test_trains_claim_uses_the_last_fifth_and_chance_levels():
    mod = load_experiment("cifar10_resnet")
    cfg = get_config("cifar10_resnet", "quick")
    losses = [[2.0, 2.1, 2.0], [1.5, 1.6, 1.5], [1.0, 1.1, 1.0], [0.8, 0.9, 0.85]]
    c = mod._trains_claim("resnet20", _result(losses, [0.7, 0.72, 0.71]), cfg)
    assert c["id"] == "trains_resnet20" and c["verdict"] == "pass"
    np.testing.assert_allclose(c["measured"]["train_loss_resnet20"], [0.8, 0.9, 0.85])  # steps > 1600: the last row
    np.testing.assert_allclose(c["measured"]["test_error_resnet20"], [30.0, 28.0, 29.0], atol=1e-9)
    chance = mod._trains_claim("resnet20", _result([[2.31, 2.30, 2.32]] * 4, [0.1, 0.1, 0.1]), cfg)
    assert chance["verdict"] == "fail"  # a pipeline that learns nothing stays at log(10)


def test_runs_claim_needs_finite_losses_at_every_eval_point():
    mod = load_experiment("cifar10_resnet")
    cfg = get_config("cifar10_resnet", "smoke")
    ok = mod._runs_claim("resnet20", _result([[2.3], [2.2]], [0.1], steps=(2, 4)), cfg)
    assert ok["verdict"] == "pass"
    nan = mod._runs_claim("resnet20", _result([[2.3], [float("nan")]], [0.1], steps=(2, 4)), cfg)
    assert nan["verdict"] == "fail"
