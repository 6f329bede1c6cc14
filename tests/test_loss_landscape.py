"""Filter-normalized directions, the compiled loss grid and its convexity measures; the experiment's smoke run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nnbasics.analysis import loss_landscape


def _params():
    r = np.random.default_rng(0)
    return {
        "conv": {"kernel": r.standard_normal((3, 3, 2, 4)).astype(np.float32), "bias": np.ones(4, np.float32)},
        "norm": {"scale": np.ones(4, np.float32), "bias": np.zeros(4, np.float32)},
        "stage1_blocks": {"block": {"conv1": {"kernel": 3 * r.standard_normal((2, 3, 3, 4, 4)).astype(np.float32)}}},
        "head": {"kernel": 0.1 * r.standard_normal((4, 5)).astype(np.float32), "bias": np.zeros(5, np.float32)},
    }


def test_filter_normalized_direction():
    p = _params()
    d = jax.tree.map(np.asarray, loss_landscape.random_direction(jax.random.key(1), p))
    # every filter (output channel) of the direction has the norm of the same filter of the weights
    np.testing.assert_allclose(np.linalg.norm(d["conv"]["kernel"].reshape(-1, 4), axis=0),
                               np.linalg.norm(p["conv"]["kernel"].reshape(-1, 4), axis=0), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(d["head"]["kernel"], axis=0), np.linalg.norm(p["head"]["kernel"], axis=0),
                               rtol=1e-5)
    # stacked (scanned) layers: one set of filters per layer
    ds, ps = d["stage1_blocks"]["block"]["conv1"]["kernel"], p["stage1_blocks"]["block"]["conv1"]["kernel"]
    np.testing.assert_allclose(np.sqrt((ds**2).sum(axis=(1, 2, 3))), np.sqrt((ps**2).sum(axis=(1, 2, 3))), rtol=1e-5)
    # biases and normalization parameters do not move
    for leaf in (d["conv"]["bias"], d["norm"]["scale"], d["norm"]["bias"], d["head"]["bias"]):
        assert float(np.abs(leaf).sum()) == 0.0
    # a direction is not the weights themselves
    assert float(np.abs(d["conv"]["kernel"] - p["conv"]["kernel"]).max()) > 0.1


def _np_loss(w, d1, d2, a, b):
    p = {k: np.asarray(w[k]) + a * np.asarray(d1[k]) + b * np.asarray(d2[k]) for k in w}
    return np.sum(p["a"] ** 2) + np.sum(p["b"] ** 2) + p["a"][0] * p["b"][0, 0]


def test_loss_surface_equals_pointwise_evaluation():
    w = {"a": jnp.array([1.0, -2.0]), "b": jnp.array([[0.5]])}
    d1 = {"a": jnp.array([1.0, 0.0]), "b": jnp.array([[0.0]])}
    d2 = {"a": jnp.array([0.0, 1.0]), "b": jnp.array([[2.0]])}

    def loss(p):
        return jnp.sum(p["a"] ** 2) + jnp.sum(p["b"] ** 2) + p["a"][0] * p["b"][0, 0]

    al, be = np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 3)
    for bs in (None, 2):
        s = loss_landscape.loss_surface(loss, w, d1, d2, al, be, batch_size=bs)
        ref = np.array([[_np_loss(w, d1, d2, a, b) for b in be] for a in al])
        np.testing.assert_allclose(s, ref, rtol=1e-6)


def test_hessians_and_convexity_of_quadratics():
    ax = np.linspace(-1, 1, 11)
    aa, bb = np.meshgrid(ax, ax, indexing="ij")
    saddle = aa**2 + 3 * aa * bb - bb**2  # Hessian [[2, 3], [3, -2]]: eigenvalues +-sqrt(13)
    h = loss_landscape.surface_hessians(saddle, 0.2, 0.2)
    np.testing.assert_allclose(h, np.broadcast_to([[2.0, 3.0], [3.0, -2.0]], h.shape), atol=1e-9)
    assert loss_landscape.nonconvex_fraction(saddle, ax, ax) == 1.0
    np.testing.assert_allclose(loss_landscape.eigen_ratio_map(saddle, ax, ax), 1.0)
    bowl = aa**2 + 0.5 * bb**2
    assert loss_landscape.nonconvex_fraction(bowl, ax, ax) == 0.0 and loss_landscape.eigen_ratio_map(bowl, ax, ax).max() == 0.0
    # a bump in one corner: non-convex there only, and `radius` restricts the count to the centre
    mixed = bowl - 3 * np.exp(-((aa - 0.8) ** 2 + (bb - 0.8) ** 2) / 0.05)
    f = loss_landscape.nonconvex_fraction(mixed, ax, ax)
    assert 0 < f < 0.5 and loss_landscape.nonconvex_fraction(mixed, ax, ax, radius=0.4) == 0.0
    assert loss_landscape.local_minima(bowl) == 1 and loss_landscape.local_minima(saddle) == 0
    egg = np.cos(6 * aa) * np.cos(6 * bb)  # minima at (+-pi/6, 0), (0, +-pi/6) inside the grid
    assert loss_landscape.local_minima(egg) == 4


def test_experiment_config_has_no_threshold_and_offset_reaches_every_seed():
    from nnbasics.runs.experiment import get_config, load_experiment

    for preset in ("smoke", "quick", "full"):
        cfg = get_config("loss_landscape", preset)
        assert "margin" not in cfg and len(cfg.seeds) >= 3
    th = load_experiment("loss_landscape").THRESHOLDS["nonconvex_gap"]
    assert (th.op, th.value) == (">", 0.0)
    cfg = get_config("loss_landscape", "quick", seed_offset=100)
    assert tuple(cfg.seeds) == (100, 101, 102) and cfg.direction_seed == 100 and cfg.data_kwargs.seed == 100


def test_experiment_smoke(tmp_path):
    from nnbasics.runs import claims
    from nnbasics.runs.experiment import run_experiment

    res = run_experiment("loss_landscape", "smoke", workdir=tmp_path)
    assert [c["id"] for c in res["claims"]] == ["no_shortcut_less_convex"]
    c = res["claims"][0]
    assert c["verdict"] in claims.VERDICTS
    (k,) = c["checks"]
    assert k["n"] == 3 and k["name"] == "nonconvex_gap"
    m = c["measured"]
    np.testing.assert_allclose(k["samples"], np.subtract(m["nonconvex_fraction_plain8"], m["nonconvex_fraction_resnet8"]))
    for name in ("plain8", "resnet8"):
        assert all(0.0 <= v <= 1.0 for v in m[f"nonconvex_fraction_{name}"] + m[f"nonconvex_fraction_grid_{name}"])
        assert all(1.5 < v < 3.5 for v in m[f"center_loss_{name}"])  # 4 steps from scratch: near ln 10
    surf = np.load(tmp_path / "surfaces.npz")
    assert surf["plain8"].shape == (3, 5, 5) and list(surf["seeds"]) == [0, 1, 2]
    # each seed has its own trained net and directions: different surfaces; the centre is the trained loss
    assert not np.allclose(surf["plain8"][0], surf["plain8"][1])
    np.testing.assert_allclose(surf["plain8"][:, 2, 2], m["center_loss_plain8"], rtol=1e-6)
    assert (tmp_path / "figures" / "loss_landscape.png").exists()


def test_paper_preset_is_the_papers_scale_and_full_is_between_quick_and_paper():
    """paper: ResNet-56 at the paper's widths on 32x32 crops (an accelerator's preset); full: the paper's
    depth at the quick preset's widths and images, with more seeds, a finer grid, more examples, more steps."""
    from nnbasics.runs.experiment import get_config

    quick, full, paper = (get_config("loss_landscape", p) for p in ("quick", "full", "paper"))
    assert (int(paper.depth), int(paper.width), int(paper.data_kwargs.size)) == (56, 16, 32)
    assert (int(paper.steps), int(paper.batch_size), int(paper.grid_points), int(paper.landscape_examples)) == \
        (4000, 128, 31, 1024)
    assert int(full.depth) == int(paper.depth) == int(quick.depth) == 56
    assert full.to_dict() not in (quick.to_dict(), paper.to_dict())
    assert len(full.seeds) >= 5 and len(full.seeds) > len(quick.seeds)
    assert int(full.grid_points) > int(quick.grid_points)
    assert int(full.landscape_examples) > int(quick.landscape_examples)
    assert int(full.steps) > int(quick.steps)
    # the claim's rule is one for every preset
    assert (full.radius, full.grid_radius, full.bn_mode) == (quick.radius, quick.grid_radius, quick.bn_mode)
