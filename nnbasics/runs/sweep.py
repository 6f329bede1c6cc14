"""Sweeps: an experiment's named grid of config overrides, one workdir per point, shardable over
machines (`--shard I/N`), finished points skipped; `collect` merges the results into one table
and figure.

    nnbasics sweep mnist1d --sweep learning_rate --quick --shard 0/2   # on machine 0
    nnbasics sweep mnist1d --sweep learning_rate --quick --shard 1/2   # on machine 1
    nnbasics collect runs/mnist1d-sweep-learning_rate-quick
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Any, Iterable

from nnbasics import config as config_lib
from nnbasics.progress import log
from nnbasics.registry import UnknownNameError, unknown_name_message
from nnbasics.runs import experiment as exp
from nnbasics.runs import workdir as workdir_lib


def parse_shard(text: str | None) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    if not text:
        return 0, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise config_lib.ConfigError(f"--shard must look like I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def sweep_points(name: str, sweep: str) -> list[dict[str, Any]]:
    mod = exp.load_experiment(name)
    sweeps = getattr(mod, "SWEEPS", {}) or {}
    if not sweeps:
        raise UnknownNameError(f"experiment {name!r} defines no sweeps")
    if sweep not in sweeps:
        raise UnknownNameError(unknown_name_message(f"sweep of {name}", sweep, list(sweeps)))
    return [dict(p) for p in sweeps[sweep]]


def point_slug(point: dict[str, Any]) -> str:
    text = ",".join(f"{k.split('.')[-1]}={v}" for k, v in point.items())
    return re.sub(r"[^A-Za-z0-9_.,=+-]+", "_", text)[:80] or "default"


def sweep_root(name: str, sweep: str, preset: str, root: str | os.PathLike = "runs") -> pathlib.Path:
    suffix = "" if preset == "full" else f"-{preset}"
    return pathlib.Path(root) / f"{name}-sweep-{sweep}{suffix}"


def run_sweep(
    name: str,
    sweep: str,
    preset: str = "full",
    shard: str | None = None,
    overrides: Iterable[str] = (),
    root: str | os.PathLike = "runs",
    force: bool = False,
) -> tuple[pathlib.Path, list[dict[str, Any]]]:
    """Run this shard's points of the sweep (validating every point first); returns (dir, results)."""
    index, count = parse_shard(shard)
    points = sweep_points(name, sweep)
    if count > len(points):
        raise config_lib.ConfigError(f"--shard {shard}: the sweep {sweep!r} of {name} has {len(points)} points, so at "
                                     f"most {len(points)} shards (I/N with N <= {len(points)}) have work")
    base = exp.get_config(name, preset, overrides)
    configs = []
    for p in points:  # check every point before running any
        cfg = config_lib.apply_dict(base, p)
        exp.validate(name, cfg)
        configs.append(cfg)
    out = sweep_root(name, sweep, preset, root)
    out.mkdir(parents=True, exist_ok=True)
    dirs = [f"{i:03d}-{point_slug(p)}" for i, p in enumerate(points)]
    workdir_lib.atomic_write_json(out / "sweep.json", {
        "experiment": name, "sweep": sweep, "preset": preset, "overrides": list(overrides),
        "points": [{"dir": d, "overrides": p} for d, p in zip(dirs, points)],
    })
    results = []
    mine = [i for i in range(len(points)) if i % count == index]
    for k, i in enumerate(mine):
        log(f"[{k + 1}/{len(mine)}] {name} {sweep}: {points[i]}")
        results.append(exp.run_experiment(name, preset, workdir=out / dirs[i], force=force, config=configs[i]))
    return out, results


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def collect(directory: str | os.PathLike) -> tuple[pathlib.Path, list[dict[str, Any]]]:
    """Merge every finished point under `directory` into collect.md, collect.json, collect.png."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no such directory: {directory}")
    runs = sorted(p.parent for p in directory.glob("*/claims.json"))
    if not runs:
        raise FileNotFoundError(f"no finished runs (*/claims.json) under {directory}")
    meta = workdir_lib.read_json(directory / "sweep.json") if (directory / "sweep.json").exists() else None
    configs = [_flatten(workdir_lib.read_json(r / "config.json")) for r in runs]
    if meta:
        swept = list(dict.fromkeys(k for p in meta["points"] for k in p["overrides"]))
    else:
        keys = set().union(*configs)
        swept = sorted(k for k in keys if len({repr(c.get(k)) for c in configs}) > 1)
    rows = []
    for r, cfg in zip(runs, configs):
        res = workdir_lib.read_json(r / "claims.json")
        measured = {k: v for c in res["claims"] for k, v in c["measured"].items() if isinstance(v, (int, float))}
        intervals = {k["statistic"]: k["ci"] for c in res["claims"] for k in c.get("checks", [])
                     if k.get("random", True) and k.get("n", 1) >= 2}
        measured.update({k["statistic"]: k["mean"] for c in res["claims"] for k in c.get("checks", [])})
        rows.append({
            "intervals": intervals,
            "dir": r.name,
            "point": {k: cfg.get(k) for k in swept},
            "measured": measured,
            "passed": sum(c["verdict"] == "pass" for c in res["claims"]),
            "claims": len(res["claims"]),
            "seconds": res.get("seconds"),
        })
    keys = list(dict.fromkeys(k for row in rows for k in row["measured"]))
    head = ["point", *swept, *keys, "claims passed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["dir"], *[str(row["point"][k]) for k in swept],
                 *[_num(row["measured"].get(k)) for k in keys], f"{row['passed']}/{row['claims']}"]
        lines.append("| " + " | ".join(cells) + " |")
    title = f"# {meta['experiment']} sweep `{meta['sweep']}`" if meta else f"# {directory.name}"
    text = "\n".join([title, "", f"{len(rows)} finished points.", "", *lines, "", "![collect](collect.png)", ""])
    workdir_lib.atomic_write_text(directory / "collect.md", text)
    workdir_lib.atomic_write_json(directory / "collect.json", {"swept": swept, "rows": rows})
    _figure(directory, rows, swept, keys)
    return directory / "collect.md", rows


def _num(v: Any) -> str:
    return "" if v is None else f"{v:.4g}"


def _figure(directory: pathlib.Path, rows: list[dict[str, Any]], swept: list[str], keys: list[str]) -> None:
    import textwrap

    import numpy as np

    from nnbasics.runs.plotting import subplots

    # the claims' checked statistics first (drawn with their 95% intervals), then other measurements;
    # spreads (`*_std`), timings and seed counts are not metrics of their own
    checked = list(dict.fromkeys(k for r in rows for k in r.get("intervals", {})))
    rest = [k for k in keys if k not in checked and "seconds" not in k and k != "seeds" and not k.endswith("_std")]
    keys = (checked + rest)[:6] or keys[:1]
    if not keys:
        return
    fig, axes = subplots(1, len(keys), size=(4, 3.4))
    numeric = len(swept) == 1 and all(isinstance(r["point"][swept[0]], (int, float)) for r in rows)
    for ax, k in zip(axes, keys):
        ys = np.array([r["measured"].get(k, float("nan")) for r in rows], float)
        ci = np.array([r.get("intervals", {}).get(k, [y, y]) for r, y in zip(rows, ys)], float)
        err = np.abs(np.stack([ys - ci[:, 0], ci[:, 1] - ys]))
        if numeric:
            xs = np.array([r["point"][swept[0]] for r in rows], float)
            order = np.argsort(xs)
            ax.errorbar(xs[order], ys[order], yerr=err[:, order], fmt="o-", capsize=3)
            ax.set_xlabel(swept[0])
            if xs.min() > 0 and xs.max() / xs.min() >= 8:  # a rate or size grid spaced by factors
                ax.set_xscale("log")
        else:
            ax.bar(range(len(ys)), ys, yerr=err, capsize=3)
            ax.set_xticks(range(len(ys)), [r["dir"][:12] for r in rows], rotation=30, ha="right", fontsize=7)
            ax.set_xlabel("point")
        ax.set_title("\n".join(textwrap.wrap(k + (" (mean, 95% CI)" if k in checked else ""), 30)), fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(directory.name, fontsize=10)
    fig.tight_layout()
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    workdir_lib.atomic_write_bytes(directory / "collect.png", buf.getvalue())
