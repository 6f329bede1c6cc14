"""Sweeps: an experiment's named grid of config overrides, one workdir per point, shardable over
machines (`--shard I/N`), finished points skipped; `collect` merges the results into one table
and figure.

    nnbasics sweep mnist1d --sweep learning_rate --quick --shard 0/2   # on machine 0
    nnbasics sweep mnist1d --sweep learning_rate --quick --shard 1/2   # on machine 1
    nnbasics collect runs/mnist1d-sweep-learning_rate-quick
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import sys
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


def sweep_names(name: str) -> dict[str, int]:
    """An experiment's named sweeps and their point counts (empty when it defines none)."""
    sweeps = exp.experiment(name).sweeps
    return {k: len(v) for k, v in sweeps.items()}


def sweep_points(name: str, sweep: str) -> list[dict[str, Any]]:
    sweeps = exp.experiment(name).sweeps
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
    # a read-only --root, or one that is a regular file: one clear error (rc 2) before anything is written
    workdir_lib.ensure_writable(out, what=f"the {name} sweep {sweep!r}")
    dirs = [f"{i:03d}-{point_slug(p)}" for i, p in enumerate(points)]
    _write_sweep_meta(out, {
        "experiment": name, "sweep": sweep, "preset": preset, "overrides": list(overrides),
        "points": [{"dir": d, "overrides": p} for d, p in zip(dirs, points)],
    }, force)
    results, busy = [], []
    mine = [i for i in range(len(points)) if i % count == index]
    for k, i in enumerate(mine):
        log(f"[{k + 1}/{len(mine)}] {name} {sweep}: {points[i]}")
        try:
            results.append(exp.run_experiment(name, preset, workdir=out / dirs[i], force=force, config=configs[i]))
        except workdir_lib.WorkdirBusy as e:  # the same sweep runs in another process: the point is its
            busy.append(f"{dirs[i]}: {e.holder}")
    if busy:  # said even when quiet: these points' results are not in this sweep's summary
        print(f"nnbasics: {len(busy)} point(s) left to the other process running this sweep ("
              f"{'; '.join(busy)}); run `nnbasics collect {out}` once it is done", file=sys.stderr)
    return out, results


def _write_sweep_meta(out: pathlib.Path, meta: dict[str, Any], force: bool) -> None:
    """sweep.json names the points; one left by the same sweep with other overrides is refused
    (its points' runs would mix two grids) unless forced. Two identical sweeps started at once
    share the work: each point's lock gives it to the first that reaches it."""
    path = out / "sweep.json"
    if path.exists() and not force:
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None  # damaged: rewritten (the points' own runs decide what is reused)
        if isinstance(old, dict) and {k: old.get(k) for k in meta} != json.loads(workdir_lib.to_json(meta)):
            raise config_lib.ConfigError(
                f"{path} holds the sweep with other settings (overrides {old.get('overrides')}, preset "
                f"{old.get('preset')!r}) than this one ({meta['overrides']}, {meta['preset']!r}); use another "
                "--root, or --force to replace its runs")
    workdir_lib.atomic_write_json(path, meta)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class _Unreadable(ValueError):
    """A finished point whose files cannot be used; the message names the file."""


def _finite(v: Any) -> float | None:
    """`v` as a finite float if it is a JSON number (not a bool, not NaN, inf or too large), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _scalar(v: Any) -> Any:
    """A swept value as stored: JSON scalars kept (non-finite or huge numbers as text), anything else as text."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (int, float)):
        f = _finite(v)
        return v if f is not None and abs(v) < 1e300 else str(v)[:40]
    return str(v)[:200]


def _read_doc(path: pathlib.Path) -> Any:
    try:
        return workdir_lib.read_json(path)
    except (OSError, ValueError, RecursionError) as e:  # truncated, not JSON, not UTF-8, huge ints, nested too deep
        raise _Unreadable(f"{path}: not a readable JSON file ({type(e).__name__}: {str(e)[:120]})") from None


def _read_point(run: pathlib.Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(flat config, the fields of claims.json collect uses) of one finished point; _Unreadable if damaged."""
    cfg = _read_doc(run / "config.json") if (run / "config.json").exists() else {}
    if not isinstance(cfg, dict):
        raise _Unreadable(f"{run / 'config.json'}: not a JSON object")
    res = _read_doc(run / "claims.json")
    claims = res.get("claims") if isinstance(res, dict) else None
    if not isinstance(claims, list) or not all(isinstance(c, dict) for c in claims):
        raise _Unreadable(f"{run / 'claims.json'}: no list of claims (objects) in it")
    measured: dict[str, float] = {}
    intervals: dict[str, list[float]] = {}
    for c in claims:
        m = c.get("measured")
        for k, v in (m.items() if isinstance(m, dict) else ()):
            if _finite(v) is not None:
                measured[k] = _finite(v)
    for c in claims:
        checks = c.get("checks")
        for k in checks if isinstance(checks, list) else ():
            if not isinstance(k, dict) or not isinstance(k.get("statistic"), str):
                continue
            stat, ci = k["statistic"], k.get("ci")
            if _finite(k.get("mean")) is not None:
                measured[stat] = _finite(k["mean"])
            n = _finite(k.get("n", 1))
            if (k.get("random", True) is not False and n is not None and n >= 2 and isinstance(ci, list)
                    and len(ci) == 2 and all(_finite(x) is not None for x in ci)):
                intervals[stat] = [float(x) for x in ci]
    return _flatten(cfg), {"measured": measured, "intervals": intervals,
                           "passed": sum(c.get("verdict") == "pass" for c in claims), "claims": len(claims),
                           "seconds": _finite(res.get("seconds"))}


def _sweep_meta(directory: pathlib.Path) -> tuple[dict[str, Any] | None, str | None]:
    """sweep.json if it is there and well formed, else (None, why it was not used)."""
    path = directory / "sweep.json"
    if not path.exists():
        return None, None
    try:
        meta = _read_doc(path)
    except _Unreadable as e:
        return None, str(e)
    points = meta.get("points") if isinstance(meta, dict) else None
    if not (isinstance(points, list) and all(isinstance(p, dict) and isinstance(p.get("overrides"), dict)
                                              for p in points)):
        return None, f"{path}: not a sweep description (no list of points with overrides)"
    return meta, None


_MD_SPECIAL = re.compile(r"([\\`*\[\]|~])")


def markdown_text(v: Any, limit: int = 80) -> str:
    """`v` as inert text inside a Markdown table cell: one line, at most `limit` characters, HTML
    special characters as entities and Markdown's (pipes, emphasis, code, links) backslash-escaped."""
    import html

    text = " ".join(str(v).split())
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    text = _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))
    return re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", text)  # intraword _ is never emphasis


def collect(directory: str | os.PathLike) -> tuple[pathlib.Path, list[dict[str, Any]]]:
    """Merge every finished point under `directory` into collect.md, collect.json, collect.png.
    A point whose files are damaged or malformed is skipped and named (log and collect.md); every
    text copied from the files into collect.md is escaped."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory (give the sweep's directory)" if directory.exists()
                                else f"no such directory: {directory}")
    runs = sorted(p.parent for p in directory.glob("*/claims.json"))
    if not runs:
        raise FileNotFoundError(f"no finished runs (*/claims.json) under {directory}")
    meta, skipped = _sweep_meta(directory)
    skipped = [skipped] if skipped else []
    points = []
    for r in runs:
        try:
            points.append((r, *_read_point(r)))
        except _Unreadable as e:
            skipped.append(str(e))
    for why in skipped:
        log(f"collect: skipped {why}")
    if not points:
        raise FileNotFoundError(f"no readable finished runs under {directory}: " + "; ".join(skipped))
    configs = [cfg for _, cfg, _ in points]
    if meta:
        swept = list(dict.fromkeys(str(k) for p in meta["points"] for k in p["overrides"]))
    else:
        keys = set().union(*configs)
        swept = sorted(k for k in keys if len({repr(c.get(k)) for c in configs}) > 1)
    rows = [{"intervals": fields["intervals"], "dir": r.name, "point": {k: _scalar(cfg.get(k)) for k in swept},
             "measured": fields["measured"], "passed": fields["passed"], "claims": fields["claims"],
             "seconds": fields["seconds"]} for r, cfg, fields in points]
    keys = list(dict.fromkeys(k for row in rows for k in row["measured"]))
    head = ["point", *swept, *keys, "claims passed"]
    lines = ["| " + " | ".join(markdown_text(h) for h in head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["dir"], *[str(row["point"][k]) for k in swept],
                 *[_num(row["measured"].get(k)) for k in keys], f"{row['passed']}/{row['claims']}"]
        lines.append("| " + " | ".join(markdown_text(c) for c in cells) + " |")
    title = (f"# {markdown_text(meta.get('experiment'))} sweep {markdown_text(meta.get('sweep'))}" if meta
             else f"# {markdown_text(directory.name)}")
    notes = [f"Skipped {len(skipped)} unreadable file(s):", "", *(f"- {markdown_text(s, 300)}" for s in skipped), ""]
    try:
        _figure(directory, rows, swept, keys)
        figure = ["![collect](collect.png)"]
    except Exception as e:  # noqa: BLE001 - the table is the result; a figure that cannot be drawn must not lose it
        log(f"collect: no figure ({type(e).__name__}: {e})")
        figure = []
    text = "\n".join([title, "", f"{len(rows)} finished points.", "", *lines, "", *(notes if skipped else []),
                      *figure, ""])
    workdir_lib.atomic_write_text(directory / "collect.md", text)
    workdir_lib.atomic_write_json(directory / "collect.json", {"swept": swept, "rows": rows, "skipped": skipped})
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
