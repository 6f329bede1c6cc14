"""The MNIST-1D benchmark's claims: thresholds in code around the reference code's numbers, the
tail-mean statistic, and verdicts from per-seed accuracies (no training: a fake TrainResult)."""

import numpy as np
import pytest

from experiments import mnist1d
from nnbasics.engine import TrainResult
from nnbasics.runs.experiment import get_config


def _result(per_seed_curves):
    """A TrainResult whose test accuracy (fractions) is `per_seed_curves[seed][eval]`, evals every 250 steps."""
    curves = np.asarray(per_seed_curves, np.float64)
    history = [{"step": 250 * (i + 1), "test_accuracy": curves[:, i].tolist()} for i in range(curves.shape[1])]
    return TrainResult(history, None, [{"seed": s, "learning_rate": 0.01} for s in range(len(curves))], 1.0, 0.0)


def test_thresholds_are_the_reference_code_plus_minus_the_band():
    assert mnist1d.REFERENCE == {"logistic": 31.5, "mlp": 65.1, "cnn": 92.3}  # the reference notebook at step 6000
    assert mnist1d.PUBLISHED == {"logistic": 32.0, "mlp": 68.0, "cnn": 94.0}  # the paper's Table 1
    for m, ref in mnist1d.REFERENCE.items():
        lo, hi = mnist1d.THRESHOLDS[f"{m}_accuracy_at_least"], mnist1d.THRESHOLDS[f"{m}_accuracy_at_most"]
        assert (lo.op, hi.op) == (">=", "<=")
        assert lo.value == pytest.approx(ref - 3) and hi.value == pytest.approx(ref + 3)
        assert str(mnist1d.PUBLISHED[m]).rstrip("0").rstrip(".") in lo.why


def test_config_has_no_threshold_keys_and_seeds_reach_every_model():
    for preset in ("full", "quick", "smoke"):
        cfg = get_config("mnist1d", preset)
        assert not {"tolerance", "minimum"} & set(cfg.keys())
        assert len(cfg.seeds) >= 2 and len(cfg.cnn_seeds) >= 2
    shifted = get_config("mnist1d", "quick", seed_offset=100)
    assert shifted.seeds[0] == 100 and shifted.cnn_seeds[0] == 100


def test_tail_mean_averages_the_last_fifth_of_training():
    steps = np.arange(250, 6001, 250)  # 24 evaluations; the last 20% are steps >= 4800: 5 of them
    vals = np.tile(np.arange(24, dtype=float), (2, 1))
    vals[1] *= 2
    np.testing.assert_allclose(mnist1d.tail_mean(steps, vals), [np.mean(np.arange(19, 24)), 2 * np.mean(np.arange(19, 24))])
    np.testing.assert_allclose(mnist1d.tail_mean(np.array([100]), np.array([[0.5]])), [0.5])  # one evaluation: the final one


def test_accuracy_claim_decides_with_the_interval_of_per_seed_accuracies():
    flat = [[0.60] * 24, [0.62] * 24, [0.64] * 24, [0.66] * 24]  # 60, 62, 64, 66 %: mean 63, interval [59.9, 66.1]
    c = mnist1d.accuracy_claim("mlp", _result(flat), 4)
    np.testing.assert_allclose(c["measured"]["test_accuracy_mlp"], [60, 62, 64, 66])
    assert [k["verdict"] for k in c["checks"]] == ["inconclusive", "pass"] and c["verdict"] == "inconclusive"
    lo, hi = c["checks"][0]["ci"]
    half = 3.182446 * np.std([60, 62, 64, 66], ddof=1) / 2  # t(0.975, 3) * s / sqrt(4)
    assert (lo, hi) == pytest.approx((63 - half, 63 + half), abs=1e-4)
    tight = [[0.645] * 24, [0.65] * 24, [0.655] * 24]
    assert mnist1d.accuracy_claim("mlp", _result(tight), 3)["verdict"] == "pass"
    assert mnist1d.accuracy_claim("logistic", _result(tight), 3)["verdict"] == "fail"  # 65% is far above 31.5 + 3
