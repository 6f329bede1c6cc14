"""Signal propagation statistics: the numbers on hand-made tensors, block order, scanned stages,
the NF prediction, and the experiment's smoke run (claims.json contract)."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nnbasics.analysis.signal_propagation import (
    channel_stats,
    nf_predicted_variance,
    record,
    signal_propagation,
)


def test_channel_stats_numbers():
    # channel 0: constant 3 (mean 3, var 0); channel 1: values -1, 1 (mean 0, var 1)
    x = jnp.stack([jnp.full((2, 2, 2), 3.0), jnp.array([[[-1.0, 1.0]] * 2] * 2)], axis=-1)
    sq_mean, var = channel_stats(x)
    assert float(sq_mean) == (9.0 + 0.0) / 2
    assert float(var) == (0.0 + 1.0) / 2


class _Toy(nn.Module):
    """Three 'residual blocks' y = x + k x with known statistics."""

    @nn.compact
    def __call__(self, x, train=False):
        for i, k in enumerate((1.0, 2.0, 3.0)):
            x = _ToyBlock(k, name=f"b{i}")(x)
        return x


class _ToyBlock(nn.Module):
    k: float

    @nn.compact
    def __call__(self, x):
        f = self.k * x
        y = x + f
        record(self, y, f)
        return y


def test_signal_propagation_order_and_values():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3, 3, 2)), jnp.float32)
    model = _Toy()
    v = model.init(jax.random.key(0), x)
    assert "spp" not in v  # nothing recorded at init
    out = signal_propagation(model, v, x)
    assert out["blocks"] == ["b0", "b1", "b2"]
    _, var0 = channel_stats(x)
    scale = np.array([2.0, 6.0, 24.0])  # cumulative (1 + k)
    np.testing.assert_allclose(out["avg_var"], float(var0) * scale**2, rtol=1e-5)
    np.testing.assert_allclose(out["residual_var"], float(var0) * (np.array([1.0, 2.0, 6.0]) * [1, 2, 3]) ** 2,
                               rtol=1e-5)
    y = model.apply(v, x)  # without the collection: a plain forward pass
    np.testing.assert_allclose(y, 24.0 * x, rtol=1e-6)


def test_nf_prediction():
    np.testing.assert_allclose(nf_predicted_variance((2, 3), 0.5), [1.25, 1.5, 1.25, 1.5, 1.75])


def test_experiment_smoke(tmp_path):
    from nnbasics.runs.experiment import run_experiment

    res = run_experiment("signal_propagation", "smoke", workdir=tmp_path)
    claims = {c["id"]: c for c in res["claims"]}
    assert list(claims) == ["bn_variance_resets_each_stage", "nf_variance_follows_prediction", "nf_mean_near_zero"]
    for c in claims.values():
        for k in c["checks"]:
            assert k["n"] == 3 and len(k["samples"]) == 3  # one value per seed
    # depth 8: one block per stage; BatchNorm brings each stage's first block back to variance ~2
    bn = claims["bn_variance_resets_each_stage"]["measured"]
    assert all(0.5 < d < 3 for d in bn["min_drop_at_stage_start"])
    nf = claims["nf_variance_follows_prediction"]["measured"]
    assert nf["unpadded_prediction_last_block_of_stages"] == [1.04, 1.04, 1.04]  # 1 + alpha^2, alpha = 0.2
    # with zero padding on 16, 8, 4 px maps: 1 + rho alpha^2, rho = ((3H - 2) / 3H)^4
    np.testing.assert_allclose(nf["predicted_last_block_of_stages"],
                               [1 + 0.04 * (46 / 48) ** 4, 1 + 0.04 * (22 / 24) ** 4, 1 + 0.04 * (10 / 12) ** 4])
    assert all(0.7 < r < 1.3 for r in nf["measured_over_predicted"])
    assert all(0 <= r < 0.2 for r in claims["nf_mean_near_zero"]["measured"]["max_mean_to_variance"])
    assert (tmp_path / "figures" / "signal_propagation.png").exists()
    assert json.loads((tmp_path / "claims.json").read_text())["experiment"] == "signal_propagation"


def test_padding_factor_counts_valid_taps():
    from experiments import signal_propagation as sp

    # a 3x3 map: per dimension 7 of 9 taps read the map (3 + 2 + 2 in rows 0, 1, 2 ... by symmetry)
    assert sp.padding_factor(3, convs=1) == (7 / 9) ** 2
    assert sp.padding_factor(64) == (190 / 192) ** 4


def test_thresholds_are_code_not_config():
    from experiments import signal_propagation as sp

    cfg = sp.get_config("quick")
    assert not any(k.startswith(("min_", "max_")) for k in cfg.keys())
    assert set(sp.THRESHOLDS) >= {"nf_variance_ratio_low", "nf_variance_ratio_high"}


def test_measure_draws_each_seed_alone():
    """A seed's statistics do not depend on the other seeds in the list, and equal one forward pass of
    the net initialized with that seed's key (the key `fit` gives member s) on that seed's input."""
    from experiments import signal_propagation as sp
    from nnbasics.analysis.signal_propagation import COLLECTION, METRICS, collect, unit_gaussian
    from nnbasics.engine import PRNG_IMPL
    from nnbasics.models import get_model

    cfg = sp.get_config("smoke")
    both = sp.measure("nf", cfg)
    cfg.seeds = (2,)
    alone = sp.measure("nf", cfg)
    for m in METRICS:
        np.testing.assert_allclose(alone[0][m], both[2][m], rtol=1e-6)
    model = get_model("nf_resnet", depth=int(cfg.depth), width=int(cfg.width), scan=True, alpha=float(cfg.alpha))
    x = unit_gaussian(tuple(cfg.input_shape), seed=2)
    variables = model.init(jax.random.key(2, impl=PRNG_IMPL), x[:1])
    direct = collect({COLLECTION: model.apply(variables, x, train=True, mutable=[COLLECTION])[1][COLLECTION]})
    for m in METRICS:
        np.testing.assert_allclose(alone[0][m], direct[m], rtol=1e-4)
    assert not np.allclose(both[0]["avg_var"], both[1]["avg_var"])  # seeds draw different nets
