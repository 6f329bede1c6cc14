"""Why CNNs: the correlation of two pixels in real photographs falls with their distance (power law).

On the photographs shipped inside pip packages (scikit-image's `skimage.data`, scikit-learn's
sample images; no download), the Pearson correlation between pixels d apart (horizontal and
vertical pairs) is measured for d = 1 ... 128 and a power law c(d) = A d^(-b) is fitted on log-log
axes. The same pixels in a scrambled order (same histogram, no spatial structure) show no
correlation at any distance. Local dependences are strong and long-range ones weak: the case for
local filters (convolution) stacked into a hierarchy.

    nnbasics run image_statistics --quick
    nnbasics run image_statistics --config.max_distance=200
"""

from __future__ import annotations

import ml_collections
import numpy as np

from nnbasics.analysis import image_statistics as ist
from nnbasics.data.photos import PHOTOS, photo
from nnbasics.runs.claims import Threshold, check, claim
from nnbasics.runs.plotting import subplots

TOPIC = "convolution"
ORDER = 41
SOURCE = "Simoncelli 2005, Statistical modeling of photographic images, Fig. 1; lecture: Why CNNs?"

# The photographs are fixed, published images: every statistic of them is deterministic (random=False).
# Only the scrambled control is random (the permutation): one value per seed.
THRESHOLDS = {
    "corr_d1": Threshold(">=", 0.8, "Simoncelli 2005 Fig. 1: neighbouring pixels of photographs correlate at ~0.9"),
    "max_rise": Threshold("<=", 0.02, "the decay is monotone; 0.02 allows the rounding of a correlation estimate"),
    "far_over_near": Threshold("<=", 0.5, "Simoncelli 2005 Fig. 1: the correlation falls well below half its "
                               "neighbour value over 100+ pixels"),
    "power_law_exponent": Threshold(">=", 1e-3, "a power law c(d) = A d^-b that decays: b > 0"),
    "power_law_r2": Threshold(">=", 0.9, "the 1/f^(2-eta) spectrum of photographs (Simoncelli & Olshausen 2001) "
                              "makes log c(d) a straight line in log d"),
    "max_abs_scrambled": Threshold("<=", 0.02, "the standard error of a correlation over N >= 1e5 independent pairs "
                                   "is 1/sqrt(N) <= 0.003: the largest of a few hundred stays far below 0.02"),
}


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.photos = tuple(PHOTOS)
    c.sklearn_images = True
    c.max_distance = 128
    c.num_distances = 20
    c.seeds = (0, 1, 2)  # the scrambling permutations (and the figure's sample of pixel pairs: the first seed)
    if preset == "quick":
        c.num_distances = 14
    elif preset == "smoke":
        c.photos = ("camera", "coins")
        c.sklearn_images = False
        c.max_distance = 16
        c.num_distances = 5
        c.seeds = (0, 1)
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    from nnbasics.data.photos import EXTRA_PHOTOS

    bad = [p for p in config.photos if p not in PHOTOS + EXTRA_PHOTOS]
    if bad:
        raise ValueError(f"config.photos: unknown photos {bad}; valid: {', '.join(PHOTOS + EXTRA_PHOTOS)}")
    if not config.photos and not config.sklearn_images:
        raise ValueError("no images: give config.photos or set config.sklearn_images=True")
    if config.max_distance < 2 or config.num_distances < 3:
        raise ValueError("config.max_distance must be >= 2 and config.num_distances >= 3")


def load_images(config) -> dict[str, np.ndarray]:
    images = {name: photo(name) for name in config.photos}
    if config.sklearn_images:
        from sklearn.datasets import load_sample_images

        sample = load_sample_images()
        for fname, img in zip(sample.filenames, sample.images):
            images["sklearn_" + fname.split("/")[-1].split(".")[0]] = img.astype(np.float32) / 255.0
    return images


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    images = load_images(config)
    smallest = min(min(img.shape[:2]) for img in images.values())
    max_d = min(int(config.max_distance), smallest // 2)
    d = ist.log_distances(max_d, int(config.num_distances))
    per_image = {name: ist.pixel_correlation(img, d) for name, img in images.items()}
    scrambled_per_seed = []
    for seed in config.seeds:
        rng = np.random.default_rng(seed)
        scrambled_per_seed.append({name: ist.pixel_correlation(ist.scramble(img, rng), d) for name, img in images.items()})
    scrambled = scrambled_per_seed[0]
    mean = np.mean(list(per_image.values()), axis=0)
    mean_scrambled = np.mean(list(scrambled.values()), axis=0)
    fit = ist.power_law_fit(d, mean)
    per_fit = {n: ist.power_law_fit(d, c) for n, c in per_image.items()}
    workdir.write_json("correlations.json", {"distances": d, "per_image": per_image, "mean": mean,
                                             "scrambled": scrambled, "fit": fit})
    _figure(workdir, images, d, per_image, mean, mean_scrambled, fit, config.seeds[0])

    steps = np.diff(mean)
    max_rise = float(steps.max()) if steps.size else 0.0
    max_abs_scrambled = [float(np.max(np.abs(list(sc.values())))) for sc in scrambled_per_seed]
    exps = np.array([f["exponent"] for f in per_fit.values() if np.isfinite(f["exponent"])])
    th = THRESHOLDS
    return [
        claim(
            "correlation_decays_with_distance",
            f"In {len(images)} real photographs the correlation between two pixels falls with their distance",
            SOURCE,
            "mean correlation {corr_d1} at distance 1, rising {max_rise} from one distance to the next, "
            f"and at distance {d[-1]} " "{far_over_near} of its value at distance 1",
            {"corr_d1": mean[0], f"corr_d{d[-1]}": mean[-1], "max_rise": max_rise, "images": len(images)},
            checks=[check("corr_d1", mean[0], th["corr_d1"], random=False),
                    check("max_rise", max_rise, th["max_rise"], random=False),
                    check("far_over_near", mean[-1] / mean[0], th["far_over_near"], random=False,
                          statistic=f"corr_d{d[-1]} / corr_d1")],
        ),
        claim(
            "power_law_decay",
            "The decay is a power law, c(d) ~ A d^(-b): a straight line on log-log axes",
            SOURCE,
            f"exponent b > 0 and R^2 >= {th['power_law_r2'].value:g} on log-log axes (d = 1 ... {d[-1]})",
            {"exponent": fit["exponent"], "prefactor": fit["prefactor"], "r2_loglog": fit["r2"],
             "exponent_per_image_median": float(np.median(exps)) if exps.size else float("nan"),
             "exponent_per_image_min": float(exps.min()) if exps.size else float("nan"),
             "exponent_per_image_max": float(exps.max()) if exps.size else float("nan")},
            checks=[check("power_law_exponent", fit["exponent"], th["power_law_exponent"], random=False),
                    check("power_law_r2", fit["r2"], th["power_law_r2"], random=False)],
        ),
        claim(
            "scrambled_control",
            "Scrambling the pixels (same histogram, no spatial structure) removes the correlation at every distance",
            "Control for the claims above",
            f"largest |correlation| over every distance and scrambled image, mean over {len(config.seeds)} "
            f"permutation seeds <= {th['max_abs_scrambled'].value:g}",
            {"max_abs_corr_scrambled": max_abs_scrambled, "mean_corr_scrambled_d1": mean_scrambled[0]},
            checks=[check("max_abs_scrambled", max_abs_scrambled, th["max_abs_scrambled"])],
        ),
    ]


def _figure(workdir, images, d, per_image, mean, mean_scrambled, fit, seed: int) -> None:
    fig, axes = subplots(1, 3, size=(4.6, 3.8))
    ax = axes[0]
    name0 = next(iter(images))
    x = ist.to_gray(images[name0])
    rng = np.random.default_rng([seed, 1])  # the sample of pixel pairs shown
    for dist, color in zip((64, 8, 1), ("C2", "C1", "C0")):  # nearest pairs drawn last, on top
        if dist >= min(x.shape):
            continue
        a, b = x[:, :-dist].ravel(), x[:, dist:].ravel()
        idx = rng.choice(a.size, min(3000, a.size), replace=False)
        ax.scatter(a[idx], b[idx], s=1, alpha=0.3, color=color, label=f"d = {dist}")
    ax.set(xlabel="pixel intensity", ylabel=f"intensity d pixels to the right ({name0})",
           title="Pairs of pixels at three distances")
    ax.legend(markerscale=8)
    ax = axes[1]
    for i, c in enumerate(per_image.values()):
        ax.plot(d, np.where(c > 0, c, np.nan), lw=0.8, alpha=0.5, label="single photos" if i == 0 else None)
    ax.plot(d, mean, "k-o", lw=2, ms=3, label="mean over photos")
    ax.plot(d, fit["prefactor"] * d ** (-fit["exponent"]), "r--",
            label=f"fit {fit['prefactor']:.2f} d^-{fit['exponent']:.2f} (R^2 {fit['r2']:.2f})")
    ax.set(xscale="log", yscale="log", xlabel="distance d (pixels)", ylabel="correlation",
           title="Correlation against distance (log-log)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax = axes[2]
    ax.plot(d, mean, "k-o", ms=3, label="photographs")
    ax.plot(d, mean_scrambled, "m-s", ms=3, label="scrambled pixels (control)")
    ax.axhline(0, color="gray", lw=0.8)
    ax.set(xscale="log", xlabel="distance d (pixels)", ylabel="mean correlation", title="Photographs vs scrambled")
    ax.legend()
    ax.grid(alpha=0.3)
    workdir.save_figure(fig, "correlation_vs_distance")


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
