"""The normalizers experiment at the smoke preset: paired per-seed checks against THRESHOLDS in code."""

import json
import math

import numpy as np

from nnbasics.runs.experiment import get_config, run_experiment, thresholds_of


def test_normalizers_thresholds_live_in_code_not_config():
    th = thresholds_of("normalizers")
    assert set(th) == {"bn_rise", "gn_change_up", "gn_change_down", "gn_minus_bn_at_smallest",
                       "bn_minus_best_other_at_largest", "bn_train_loss_log_ratio", "gn_minus_bn_train_loss_log_ratio"}
    assert all(t.why for t in th.values())
    assert th["gn_change_up"].value == -th["gn_change_down"].value  # one symmetric band
    keys = set(get_config("normalizers", "full").to_dict())
    assert not keys & {"min_bn_rise", "gn_band", "bn_tolerance"}


def test_normalizers_study_shape():
    """Wu & He's protocol at full and quick: batch 32 down to 2, the rate decayed in steps, MNIST-1D's
    40-long sequences pooled no further than 10 positions (no near-1x1 maps, where BatchNorm at batch 2
    would normalize over a handful of values)."""
    from nnbasics.data import DATASETS, dataset_names

    dataset_names()  # registers every embedded set
    for preset in ("full", "quick"):
        c = get_config("normalizers", preset)
        assert max(c.batch_sizes) == 32 and min(c.batch_sizes) == 2 and len(c.seeds) >= 5
        assert c.schedule == "step" and c.test_error_claims
        assert DATASETS.info(c.data)["input_shape"] == (40,)
        assert 40 // 2 ** (len(c.widths) - 1) >= 10
    assert sorted(get_config("normalizers", "full").batch_sizes, reverse=True) == [32, 16, 8, 4, 2]
    shifted = get_config("normalizers", "quick", seed_offset=200)
    assert tuple(shifted.seeds) == tuple(s + 200 for s in get_config("normalizers", "quick").seeds)


def test_normalizers_experiment_smoke(tmp_path):
    res = run_experiment("normalizers", "smoke", workdir=tmp_path)
    claims = {c["id"]: c for c in res["claims"]}
    assert list(claims) == ["bn_error_rises_at_small_batch", "gn_error_stable_across_batch",
                            "gn_beats_bn_at_smallest_batch", "bn_at_least_as_good_at_large_batch",
                            "bn_fit_suffers_at_small_batch", "gn_fit_suffers_less"]
    cfg = get_config("normalizers", "smoke")
    n = len(cfg.seeds)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in lines if "variant" in r]  # the summaries; the rest are the engine's training rows
    train = {r["run"]: r for r in lines if r.get("run", "").startswith("batch_")}  # the last row of each fit
    assert set(train) == {"batch_32", "batch_4"}
    assert train["batch_4"]["model"] == [{"kind": 1, "ws": False}] * n + [{"kind": 4, "ws": False}] * n
    err = {(r["variant"], r["batch_size"]): np.asarray(r["test_error"]) for r in rows}
    assert set(err) == {(v, 32) for v in cfg.variants} | {("batch", 4), ("group", 4)}
    for (v, b), e in err.items():
        assert e.shape == (n,) and np.all((0.0 <= e) & (e <= 100.0))
        # a test error is a whole number of the 360 test digits
        np.testing.assert_allclose(e * 3.6, np.round(e * 3.6), atol=1e-3)
    for r in rows:  # the learning rate scales linearly with the batch size, the epochs stay the same
        assert math.isclose(r["learning_rate"], cfg.learning_rate * r["batch_size"] / 32)
        assert r["steps"] == round(cfg.epochs * 1437 / r["batch_size"])
    # the summary rows hold the engine's final evaluation: error = 100 (1 - test accuracy), per member
    np.testing.assert_allclose(err[("batch", 4)], 100 * (1 - np.asarray(train["batch_4"]["test_accuracy"][:n])), atol=1e-6)
    # every check is paired over the seeds: its samples are per-seed differences of stored errors
    checks = {k["name"]: k for c in claims.values() for k in c["checks"]}
    np.testing.assert_allclose(checks["bn_rise"]["samples"], err[("batch", 4)] - err[("batch", 32)], atol=1e-9)
    np.testing.assert_allclose(checks["gn_change_up"]["samples"], err[("group", 4)] - err[("group", 32)], atol=1e-9)
    np.testing.assert_allclose(checks["gn_minus_bn_at_smallest"]["samples"], err[("group", 4)] - err[("batch", 4)],
                               atol=1e-9)
    best = claims["bn_at_least_as_good_at_large_batch"]["best_other"]
    np.testing.assert_allclose(checks["bn_minus_best_other_at_largest"]["samples"],
                               err[("batch", 32)] - err[(best, 32)], atol=1e-9)
    assert all(k["n"] == n for k in checks.values())
    assert {"figures/error_vs_batch_size.png", "figures/normalizer_axes.png"} <= set(res["figures"])


def test_fit_claims_from_hand_made_losses():
    """The fit claims (every preset): BatchNorm's training loss ratio (smallest / largest batch) per seed, GroupNorm's
    minus BatchNorm's; decided from per-seed log ratios (hand-made numbers, no training)."""
    import numpy as np

    from experiments.normalizers import _fit_claims

    sizes = [32, 2]
    fit = {("batch", 32): np.array([0.04, 0.05, 0.045]), ("batch", 2): np.array([0.3, 0.28, 0.35]),
           ("group", 32): np.array([0.1, 0.12, 0.11]), ("group", 2): np.array([0.1, 0.11, 0.12])}
    errors = {k: np.array([2.0, 2.5, 3.0]) for k in fit}
    bn, gn = _fit_claims(fit, errors, sizes)
    want = np.log(fit[("batch", 2)] / fit[("batch", 32)])
    np.testing.assert_allclose(bn["checks"][0]["samples"], want)
    np.testing.assert_allclose(gn["checks"][0]["samples"], np.log(fit[("group", 2)] / fit[("group", 32)]) - want)
    assert bn["verdict"] == gn["verdict"] == "pass"
    assert "not claimed here" in bn["claim"]  # without the test-error claims, the claim says so
    with_errors, _ = _fit_claims(fit, errors, sizes, test_error_claimed=True)
    assert "not claimed" not in with_errors["claim"] and with_errors["verdict"] == "pass"


def test_step_schedule_divides_the_rate_at_the_same_fractions_of_every_batch_size():
    """Wu & He's schedule: the rate / 10 at 30, 60 and 90% of each batch size's own steps (equal epochs), read
    back from the optimizer's own learning-rate schedule; a constant schedule, and bad values refused."""
    import pytest

    from experiments.normalizers import optimizer_config
    from nnbasics.engine import optim
    from nnbasics.runs.experiment import validate

    cfg = get_config("normalizers", "full")
    for lr, steps in ((0.1, 2000), (0.00625, 32000)):
        o = optimizer_config(cfg, lr, steps)
        assert o["decay_steps"] == (round(0.3 * steps), round(0.6 * steps), round(0.9 * steps))
        sched = optim.learning_rate_schedule(o, steps)
        at = [0, round(0.3 * steps), round(0.6 * steps), round(0.9 * steps), steps - 1]
        np.testing.assert_allclose([float(sched(s)) for s in at], [lr, lr / 10, lr / 100, lr / 1000, lr / 1000],
                                   rtol=1e-5)
    cfg.schedule = "constant"
    assert "schedule" not in optimizer_config(cfg, 0.1, 100)
    for key, bad in (("schedule", "cosine"), ("decay_at", (0.6, 0.3))):
        c = get_config("normalizers", "full")
        c[key] = bad
        with pytest.raises(ValueError, match=f"config.{key}"):
            validate("normalizers", c)
