"""experiments/losses.py at smoke: the identities and the gradients against their closed forms, and
the trained claims' numbers."""

import numpy as np
import pytest

from experiments import losses as L
from nnbasics.runs.experiment import get_config, run_experiment


def closed_form_norms(m: float, classes: int) -> tuple[float, float]:
    """|gradient| in the logits of cross-entropy (p - y) and of sum_c (p_c - y_c)^2 for the label's
    logit 0, one wrong class's logit m and the others 0."""
    z = np.zeros(classes)
    z[1] = m
    p = np.exp(z) / np.exp(z).sum()
    y = np.eye(classes)[0]
    ce = p - y
    se = 2 * p * (p - y) - 2 * p * np.sum(p * (p - y))
    return float(np.linalg.norm(ce)), float(np.linalg.norm(se))


def test_gradient_norms_match_the_closed_form():
    margins = np.array([0.0, 2.0, 8.0])
    got = L.gradient_norms(margins, 10)
    want = np.array([closed_form_norms(m, 10) for m in margins])
    np.testing.assert_allclose(got["cross_entropy"], want[:, 0], rtol=1e-5)
    np.testing.assert_allclose(got["squared_error"], want[:, 1], rtol=1e-4)
    assert got["squared_error"][-1] / got["cross_entropy"][-1] < 0.01 < got["squared_error"][0] / got["cross_entropy"][0]


def test_bad_config_is_refused():
    from nnbasics.config import ConfigError

    with pytest.raises(ConfigError, match="logit_scale must be > 1"):
        get_config("losses", "smoke", ["--config.logit_scale=1.0"])
    with pytest.raises(ConfigError, match=r"epsilon must be in \(0, 1\)"):
        get_config("losses", "smoke", ["--config.epsilon=1.5"])


def test_smoke(tmp_path):
    res = run_experiment("losses", "smoke", workdir=tmp_path / "wd")
    c = {k["id"]: k for k in res["claims"]}
    assert list(c) == ["cross_entropy_is_nll", "squared_error_gradient_vanishes",
                       "cross_entropy_learns_from_a_saturated_start", "label_smoothing_lowers_confidence"]
    assert c["cross_entropy_is_nll"]["verdict"] == "pass"
    assert c["cross_entropy_is_nll"]["measured"]["nll_relative_error"] < 1e-6
    ce, se = closed_form_norms(8.0, 10)
    m = c["squared_error_gradient_vanishes"]["measured"]
    assert m["gradient_norm_cross_entropy"] == pytest.approx(ce, rel=1e-5)
    assert m["ratio"] == pytest.approx(se / ce, rel=1e-4) and c["squared_error_gradient_vanishes"]["verdict"] == "pass"
    expected = c["squared_error_gradient_vanishes"]["expected"]
    assert expected.startswith("|gradient| squared error / cross-entropy at margin 8 <= 0.01")
    acc = c["cross_entropy_learns_from_a_saturated_start"]["measured"]
    assert len(acc["gain"]) == 3 and all(0 <= a <= 100 for a in acc["accuracy_cross_entropy_saturated"])
    np.testing.assert_allclose(acc["gain"], np.subtract(acc["accuracy_cross_entropy_saturated"],
                                                        acc["accuracy_squared_error_saturated"]), atol=1e-9)
    conf = c["label_smoothing_lowers_confidence"]["measured"]
    assert all(0.1 <= x <= 1 for x in conf["confidence_cross_entropy"] + conf["confidence_label_smoothing"])
    assert c["label_smoothing_lowers_confidence"]["verdict"] == "pass"  # a large effect even at 40 steps
    assert (tmp_path / "wd" / "figures" / "losses.png").exists()
