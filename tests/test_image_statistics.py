"""Pixel correlation against distance, power-law fit and the scrambled control."""

import numpy as np
import pytest

from nnbasics.analysis import image_statistics as ist


def test_checkerboard_correlations_by_hand():
    i, j = np.mgrid[0:16, 0:16]
    board = ((-1.0) ** (i + j))
    np.testing.assert_allclose(ist.pixel_correlation(board, [1, 2, 3]), [-1.0, 1.0, -1.0], atol=1e-12)
    ramp = np.add.outer(np.arange(20.0), np.arange(20.0))  # x[i, j] = i + j: perfectly correlated shifts
    np.testing.assert_allclose(ist.pixel_correlation(ramp, [1, 5]), [1.0, 1.0], atol=1e-12)
    with pytest.raises(ValueError):
        ist.pixel_correlation(board, [16])


def test_noise_and_scramble(rng):
    noise = rng.standard_normal((128, 128))
    assert np.max(np.abs(ist.pixel_correlation(noise, [1, 4, 16]))) < 0.03
    img = np.cumsum(np.cumsum(rng.standard_normal((64, 64)), 0), 1)  # strongly correlated
    s = ist.scramble(img, rng)
    np.testing.assert_array_equal(np.sort(s.ravel()), np.sort(img.ravel()))  # same histogram
    assert ist.pixel_correlation(img, [1])[0] > 0.9
    assert abs(ist.pixel_correlation(s, [1])[0]) < 0.05


def test_power_law_fit_recovers_exponent():
    d = np.array([1, 2, 4, 8, 16, 32])
    fit = ist.power_law_fit(d, 2.0 * d ** -0.5)
    assert fit["exponent"] == pytest.approx(0.5) and fit["prefactor"] == pytest.approx(2.0)
    assert fit["r2"] == pytest.approx(1.0)
    partial = ist.power_law_fit(d, np.array([1.0, 0.5, -0.1, 0.2, 0.1, 0.05]))
    assert partial["points"] == 5


def test_gray_and_distances():
    rgb = np.zeros((2, 2, 3))
    rgb[..., 1] = 1.0
    np.testing.assert_allclose(ist.to_gray(rgb), 0.587)
    d = ist.log_distances(128, 14)
    assert d[0] == 1 and d[-1] == 128 and np.all(np.diff(d) > 0)


def test_image_statistics_smoke(tmp_path):
    from nnbasics.runs.experiment import run_experiment

    doc = run_experiment("image_statistics", "smoke", workdir=tmp_path)
    claims = {c["id"]: c for c in doc["claims"]}
    assert list(claims) == ["correlation_decays_with_distance", "power_law_decay", "scrambled_control"]
    decay = claims["correlation_decays_with_distance"]["measured"]
    assert 0.8 < decay["corr_d1"] < 1.0  # neighbouring pixels of camera and coins
    assert decay["max_rise"] < 0 and decay["corr_d16"] < decay["corr_d1"]
    assert claims["power_law_decay"]["measured"]["exponent"] > 0
    scr = claims["scrambled_control"]
    assert len(scr["measured"]["max_abs_corr_scrambled"]) == 2  # one per seed
    assert all(0 < v < 0.02 for v in scr["measured"]["max_abs_corr_scrambled"])
    assert scr["checks"][0]["n"] == 2 and not claims["power_law_decay"]["checks"][0]["random"]
    assert (tmp_path / "figures" / "correlation_vs_distance.png").exists()
    assert (tmp_path / "correlations.json").exists()


def test_seeds_reach_the_scrambling():
    from experiments import image_statistics as ims
    from nnbasics.runs.experiment import get_config

    assert get_config("image_statistics", "quick", seed_offset=100).seeds == (100, 101, 102)
    assert not any(k.startswith(("min_", "max_scr")) for k in ims.get_config("quick").keys())
