"""Architecture zoo: AlexNet, VGG, GoogLeNet and ResNets with parameter and multiply-add counts equal to the papers'.

Every count is computed from the model itself (parameters by abstract evaluation of `init`,
multiply-adds from the traced forward pass; see `nnbasics.analysis.model_stats`), never from a
hand table, and compared with the papers and the reference implementations (torchvision). The
ImageNet top-5 errors the lecture quotes (15.3 / 8.5 / 7.8 / 4.4 %) are listed as context beside
the papers' own numbers: they are not measured here.

    nnbasics run model_zoo --quick
    nnbasics run model_zoo --config.models='("resnet18", "vgg16_bn")'
"""

from __future__ import annotations

import ml_collections
import numpy as np

from nnbasics.analysis.model_stats import model_stats
from nnbasics.models import model_info, model_names
from nnbasics.runs.claims import Threshold, check, claim
from nnbasics.runs.plotting import subplots

TOPIC = "architectures"
DETERMINISTIC = True  # parameter and MAC counts: no seed, nothing random
ORDER = 50

# Published parameter counts (as printed) and their sources; the tolerances are THRESHOLDS below.
PAPER_PARAMS = {
    "alexnet": (60e6, "Krizhevsky et al. 2012, sec. 3: 'The neural network has 60 million parameters'"),
    "vgg16": (138e6, "Simonyan & Zisserman 2015, Table 2: 138 million (configuration D)"),
    "googlenet": (None, "Szegedy et al. 2015, Table 1 'params' column (its sum), ~7.0M"),
    "resnet50": (25.6e6, "torchvision: 25.6M (He et al. 2016 list FLOPs, not parameters)"),
    "resnet20": (0.27e6, "He et al. 2016, Table 6: 0.27M"),
    "resnet56": (0.85e6, "He et al. 2016, Table 6: 0.85M"),
    "resnet110": (1.7e6, "He et al. 2016, Table 6: 1.7M"),
}
# Multiply-adds per 224x224 image: the papers' numbers and torchvision's table (conv + linear).
PAPER_MACS = {
    "resnet18": (1.8e9, "He et al. 2016, Table 1: 1.8 x 10^9 FLOPs (multiply-adds)"),
    "resnet34": (3.6e9, "He et al. 2016, Table 1: 3.6 x 10^9"),
    "resnet50": (4.09e9, "torchvision: 4.09 GFLOPS (stride in the 3x3 conv; the paper's 1x1-stride v1: 3.8e9)"),
    "resnet101": (7.80e9, "torchvision: 7.80 GFLOPS (paper v1: 7.6e9)"),
    "resnet152": (11.51e9, "torchvision: 11.51 GFLOPS (paper v1: 11.3e9)"),
    "vgg16": (15.47e9, "torchvision: 15.47 GFLOPS"),
    "alexnet": (0.71e9, "torchvision: 0.71 GFLOPS"),
}
# GoogLeNet: sec. 5's "1.5 billion multiply-adds" is the sum of Table 1's "ops" column (millions, as
# printed). Its conv1 row (2.7K params, 34M ops) is not what the row's own shape gives (7x7/2, 3 -> 64
# channels at 112x112: 9.4K weights, 118M multiply-adds), so the rows are compared without conv1.
GOOGLENET_OPS_M = {"conv1": 34, "conv2": 360, "3a": 128, "3b": 304, "4a": 73, "4b": 88, "4c": 100, "4d": 119,
                   "4e": 170, "5a": 54, "5b": 71, "linear": 1}
GOOGLENET_SRC = "Szegedy et al. 2015, Table 1 'ops' column; sec. 5: 'a computational budget of 1.5 billion multiply-adds'"
_P = "the relative precision of the printed number (half a unit of its last digit), rounded up"
THRESHOLDS = {
    "params_equal_reference": Threshold("<=", 0, "exact: the same layers give the same count"),
    "params_alexnet": Threshold("<=", 0.05, "'60 million' (one digit; torchvision's single-GPU variant: 61.1M)"),
    "params_vgg16": Threshold("<=", 0.005, f"'138 million': {_P}"),
    "params_googlenet": Threshold("<=", 0.05, "Table 1's 'params' rows do not all follow from the table's own layer "
                                                "shapes (conv1 2.7K against 9.4K, 4c 463K against 510K, 5a 1072K against "
                                                "1043K); 5% on their sum, not the rows' printed precision"),
    "params_resnet50": Threshold("<=", 0.005, f"'25.6M': {_P}"),
    "params_resnet20": Threshold("<=", 0.02, f"'0.27M': {_P}"),
    "params_resnet56": Threshold("<=", 0.01, f"'0.85M': {_P}"),
    "params_resnet110": Threshold("<=", 0.03, f"'1.7M': {_P}"),
    "macs_resnet18": Threshold("<=", 0.03, f"'1.8 x 10^9': {_P}"),
    "macs_resnet34": Threshold("<=", 0.03, "'3.6 x 10^9' (torchvision: 3.66)"),
    "macs_resnet50": Threshold("<=", 0.005, f"'4.09': {_P}"),
    "macs_resnet101": Threshold("<=", 0.005, f"'7.80': {_P}"),
    "macs_resnet152": Threshold("<=", 0.005, f"'11.51': {_P}"),
    "macs_vgg16": Threshold("<=", 0.005, f"'15.47': {_P}"),
    "macs_alexnet": Threshold("<=", 0.01, f"'0.71': {_P}"),
    # 11 rows printed to 1M: at most 11 x 0.5M = 5.5M of rounding in their 1468M sum (0.375%)
    "macs_googlenet": Threshold("<=", 0.00375, "Table 1's ops rows other than conv1, each printed to 1M: "
                                                 "11 x 0.5M / 1468M"),
}
# ImageNet top-5 error (%): what the lecture quotes and what the papers report (context, not measured).
TOP5 = [
    ("AlexNet", 15.3, "15.3% ILSVRC-2012 test (7 CNNs, Krizhevsky et al. 2012 Table 2); one CNN: 18.2% val", "same"),
    ("VGG", 8.5, ("7.3% ILSVRC-2014 submission (7 nets), 6.8% post-submission (2 nets), best single net 7.0% "
     "(Simonyan & Zisserman 2015, Table 7); single-scale VGG-16 8.1-8.8% val (Table 3)"),
     "8.5% is not among the paper's numbers; the closest are the single-scale results"),
    ("GoogLeNet", 7.8, ("6.67% ILSVRC-2014 winner (7 models, 144 crops); 7.89% for 1 model, 144 crops (Szegedy "
     "et al. 2015, Table 3)"), "7.89% truncated to 7.8 (rounds to 7.9)"),
    ("ResNet", 4.4, "4.49% ResNet-152 single model, val (He et al. 2016, Table 4); 3.57% ensemble, test (Table 5)",
     "4.49% truncated to 4.4 (rounds to 4.5)"),
]


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.models = ()  # empty: every model with a reference count
    c.receptive_field = True
    if preset == "quick":
        c.models = ("alexnet", "vgg16", "vgg16_bn", "googlenet", "resnet18", "resnet34", "resnet50", "resnet101",
                    "resnet152", "resnet20", "resnet56", "resnet110", "plain56")
    elif preset == "smoke":
        c.models = ("alexnet", "resnet20", "resnet56")
        c.receptive_field = False
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    names = model_names()
    for m in config.models:
        if m not in names:
            from nnbasics.registry import unknown_name_message

            raise ValueError("config.models: " + unknown_name_message("model", m, names))


def _selected(config) -> list[str]:
    if config.models:
        return list(config.models)
    return [n for n in model_names() if model_info(n).get("reference_params") or n.startswith("plain")]


def run(config: ml_collections.ConfigDict, workdir) -> list[dict]:
    names = _selected(config)
    stats = {n: model_stats(n, with_receptive_field=bool(config.receptive_field)) for n in names}
    for n, s in stats.items():
        workdir.metrics.write({"model": n, **s.as_dict()})

    out = []
    # 1. Every count equals the reference implementation's (torchvision / hand count from the paper).
    checked = {n: s for n, s in stats.items() if s.reference_params is not None}
    wrong = [n for n, s in checked.items() if s.params != s.reference_params]
    out.append(claim(
        "params_equal_reference",
        "Every model's parameter count equals the reference implementation's exactly",
        "torchvision.models (AlexNet, VGG, ResNet-18..152); He et al. 2016 sec. 4.2 (CIFAR ResNets, option A); "
        "Szegedy et al. 2015 Table 1 layer shapes (GoogLeNet)",
        "mismatches {params_equal_reference}",
        {"models_checked": len(checked), "mismatches": len(wrong)},
        checks=[check("params_equal_reference", len(wrong) if checked else float("nan"),
                      THRESHOLDS["params_equal_reference"], random=False, statistic="mismatches")],
        mismatched=wrong,
        # context: the lecture's ImageNet top-5 errors beside the papers' (not measured here)
        context=[{"model": f, "lecture_top5_error": e, "papers": p, "note": no} for f, e, p, no in TOP5],
    ))
    # 2. The papers' (rounded) numbers.
    for n, (paper, src) in PAPER_PARAMS.items():
        if n not in stats:
            continue
        measured, tol = stats[n].params, THRESHOLDS[f"params_{n}"].value
        if n == "googlenet":
            from nnbasics.models.googlenet import TABLE1_TOTAL

            paper = TABLE1_TOTAL
            expected = f"within {tol:.0%} of Table 1's sum {paper / 1e6:.2f}M (about 7.0M)"
        else:
            expected = f"{paper / 1e6:g}M +- {tol:.1%}"
        rel = abs(measured - paper) / paper
        out.append(claim(
            f"params_{n}", f"{n} has the paper's parameter count", src, expected,
            {f"params_{n}": measured, "paper": paper, "relative_difference": rel},
            checks=[check(f"params_{n}", rel, THRESHOLDS[f"params_{n}"], random=False,
                          statistic="relative_difference")],
        ))
    # 3. Multiply-adds.
    for n, (ref, src) in PAPER_MACS.items():
        if n not in stats:
            continue
        rel = abs(stats[n].macs - ref) / ref
        out.append(claim(
            f"macs_{n}", f"{n}'s multiply-adds per 224x224 image, counted from the traced model", src,
            f"{ref / 1e9:g} G +- {THRESHOLDS[f'macs_{n}'].value:.1%}",
            {f"macs_{n}": stats[n].macs, "reference": ref, "relative_difference": rel},
            checks=[check(f"macs_{n}", rel, THRESHOLDS[f"macs_{n}"], random=False, statistic="relative_difference")],
        ))
    if "googlenet" in stats:
        out.append(_googlenet_macs(stats["googlenet"].macs))

    _figure(stats, workdir)
    _top5_figure(workdir)
    from nnbasics.runs.models_table import models_table
    from nnbasics.runs.workdir import atomic_write_text

    atomic_write_text(workdir / "models.txt", models_table(False, names) + "\n")
    lines = ["| model | lecture top-5 error (%) | the papers' numbers | note |", "|---|---|---|---|"]
    lines += [f"| {f} | {e} | {p} | {no} |" for f, e, p, no in TOP5]
    atomic_write_text(workdir / "top5_context.md", "\n".join(lines) + "\n")
    return out


def _first_conv_macs(name: str) -> int:
    """Multiply-adds of the first convolution of the traced model (224x224 input)."""
    from nnbasics.analysis.model_stats import eqn_macs, forward_jaxpr
    from nnbasics.models import get_model

    jaxpr = forward_jaxpr(get_model(name, num_classes=1000), (224, 224, 3))
    return next(eqn_macs(e) for e in jaxpr.jaxpr.eqns if e.primitive.name == "conv_general_dilated")


def _googlenet_macs(total: int) -> dict:
    conv1 = _first_conv_macs("googlenet")
    paper_total = 1e6 * sum(GOOGLENET_OPS_M.values())
    rows = 1e6 * (sum(GOOGLENET_OPS_M.values()) - GOOGLENET_OPS_M["conv1"])
    rel = abs((total - conv1) - rows) / rows
    return claim(
        "macs_googlenet",
        "GoogLeNet's multiply-adds per 224x224 image, counted from the traced model, equal the sum of the paper's "
        "Table 1 'ops' rows other than conv1, to the rows' printed precision. The total "
        f"({total / 1e9:.3g}G) is {100 * (total / 1.5e9 - 1):+.1f}% from the paper's 1.5 billion (sec. 5, the "
        f"column's sum, {paper_total / 1e6:.0f}M); '1.5' allows 3.3%. The column's conv1 row says 34M where its "
        f"own shape (7x7/2, 3 -> 64 channels, 112x112 output) gives {conv1 / 1e6:.0f}M (its 2.7K parameters are "
        "also below the shape's 9.4K)",
        GOOGLENET_SRC,
        f"the rows other than conv1: traced count within {THRESHOLDS['macs_googlenet'].value:.3%} of their sum "
        f"{rows / 1e6:.0f}M (11 rows printed to 1M); the total and its difference from 1.5G reported",
        {"macs_googlenet": total, "macs_conv1": conv1, "paper_conv1_row": 34e6, "macs_without_conv1": total - conv1,
         "paper_rows_without_conv1": rows, "relative_difference_without_conv1": rel, "paper_total": 1.5e9,
         "table1_sum": paper_total, "relative_difference_total": abs(total - 1.5e9) / 1.5e9},
        checks=[check("macs_googlenet", rel, THRESHOLDS["macs_googlenet"], random=False,
                      statistic="relative_difference_without_conv1")],
    )


def _figure(stats, workdir) -> None:
    names = [n for n, s in stats.items() if s.params]
    params = np.array([stats[n].params for n in names], float)
    macs = np.array([stats[n].macs for n in names], float)
    fig, (ax,) = subplots(size=(7.5, 5))
    labels: dict[tuple[float, float], list[str]] = {}
    for n, p, m in zip(names, params, macs):
        color = "C0" if n.startswith("resnet") else "C1" if n.startswith("plain") else "C2" if n.startswith("vgg") else "C3"
        ax.scatter(m, p, color=color, s=30)
        # models at (nearly) the same point share one label
        key = next((k for k in labels if abs(np.log(k[0] / m)) < 0.02 and abs(np.log(k[1] / p)) < 0.02), (m, p))
        labels.setdefault(key, []).append(n)
    for (m, p), ns in labels.items():
        ax.annotate(" / ".join(ns), (m, p), textcoords="offset points", xytext=(4, 3), fontsize=8)
    for label, color in (("ResNet", "C0"), ("plain", "C1"), ("VGG", "C2"), ("other", "C3")):
        ax.scatter([], [], color=color, label=label)
    ax.set(xscale="log", yscale="log", xlabel="multiply-adds per image (224x224 ImageNet, 32x32 CIFAR)",
           ylabel="parameters", title="Architecture zoo: parameters vs. multiply-adds (from the traced models)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3, which="both")
    workdir.save_figure(fig, "params_vs_macs")


def _top5_figure(workdir) -> None:
    comparable = {"AlexNet": 15.3, "VGG": 7.3, "GoogLeNet": 7.89, "ResNet": 4.49}  # see TOP5 for what each is
    fams = [t[0] for t in TOP5]
    x = np.arange(len(fams))
    fig, (ax,) = subplots(size=(6.5, 4))
    ax.bar(x - 0.2, [t[1] for t in TOP5], width=0.4, label="the lecture")
    ax.bar(x + 0.2, [comparable[f] for f in fams], width=0.4, label="the paper (AlexNet, VGG: ILSVRC test entry;\n"
           "GoogLeNet: 1 model, 144 crops; ResNet-152: single model)")
    ax.set_xticks(x, fams)
    ax.set(ylabel="ImageNet top-5 error (%)", title="Context, not measured: top-5 errors, lecture vs. papers", ylim=(0, 22))
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3, axis="y")
    workdir.save_figure(fig, "top5_context")


if __name__ == "__main__":
    from nnbasics.cli import experiment_main

    experiment_main(__file__)
