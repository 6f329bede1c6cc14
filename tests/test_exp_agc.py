"""The agc experiment at the smoke preset: claims with per-seed checks against THRESHOLDS in code."""

import math

import numpy as np

from nnbasics.runs.experiment import get_config, run_experiment


def test_agc_thresholds_live_in_code_not_config():
    from nnbasics.runs.experiment import thresholds_of

    th = thresholds_of("agc")
    assert set(th) == {"agc_gain_at_large_batch", "agc_large_vs_no_agc_small", "agc_gain_at_small_batch"}
    assert all(t.why for t in th.values())
    keys = set(get_config("agc", "full").to_dict())
    assert not keys & {"min_degradation", "stable_accuracy", "small_batch_tolerance"}


def test_agc_seed_offset_reaches_every_seed():
    base, shifted = get_config("agc", "quick"), get_config("agc", "quick", seed_offset=100)
    assert tuple(shifted.seeds) == tuple(s + 100 for s in base.seeds)


def test_agc_experiment_smoke(tmp_path):
    res = run_experiment("agc", "smoke", workdir=tmp_path)
    claims = {c["id"]: c for c in res["claims"]}
    assert list(claims) == ["no_agc_fails_at_large_batch", "agc_trains_stably_at_large_batch",
                            "agc_unneeded_at_small_batch"]
    n_seeds = len(get_config("agc", "smoke").seeds)
    for c in claims.values():
        assert c["verdict"] in ("pass", "fail", "inconclusive")
        for k in c["checks"]:
            assert k["n"] == n_seeds and len(k["samples"]) == n_seeds
            assert all(math.isfinite(x) and -100.0 <= x <= 100.0 for x in k["samples"])
    # the paired samples are differences of per-seed accuracies stored in metrics.jsonl
    import json

    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in lines if "batch" in r]  # the summaries (the rest are the engine's training rows)
    train_rows = [r for r in lines if r.get("run") == "nf_resnet"]
    ratio = 64 // 32
    assert [r["step"] for r in train_rows] == [2 * ratio, 4 * ratio]  # micro-batches: the same epochs at both sizes
    assert train_rows[-1]["accumulate"] == [ratio] * 4 + [1] * 4  # (batch, lambda, seed): large batch first
    assert train_rows[-1]["agc_clip"] == [0.0, 0.0, 0.04, 0.04] * 2
    acc = {(r["batch"], r["clip"]): np.asarray(r["per_seed"]) for r in rows}
    for r in rows:  # test accuracy of a 4-step run of a tiny net: a percentage, finite
        assert all(0.0 <= a <= 100.0 for a in r["per_seed"])
    best = claims["no_agc_fails_at_large_batch"]["measured"]["best_lambda"]
    np.testing.assert_allclose(claims["no_agc_fails_at_large_batch"]["checks"][0]["samples"],
                               acc[("large", best)] - acc[("large", "none")], atol=1e-9)
    best_s = claims["agc_unneeded_at_small_batch"]["measured"]["best_lambda"]
    np.testing.assert_allclose(claims["agc_unneeded_at_small_batch"]["checks"][0]["samples"],
                               acc[("small", best_s)] - acc[("small", "none")], atol=1e-9)
    # with a clip as small as the smoke preset's, no seed diverges at either batch size
    assert all(r["diverged"] == 0 for r in rows if r["clip"] != "none")
    assert (tmp_path / "figures" / "agc_training_curves.png").exists()
