"""The `nnbasics models [--json]` listing: every registered model with its input shape, parameters,
multiply-adds per example and theoretical receptive field, all computed from the model itself
(`nnbasics.analysis.model_stats`: abstract evaluation, nothing is allocated or run).

The receptive field here is that of one unit of the last spatial feature map, the one the classifier
flattens or pools globally, so it includes a pooling layer after the last convolution (AlexNet:
195 px after pool5). `nnbasics run receptive_fields` counts up to the last convolution instead
(AlexNet: 163 px at conv5, Araujo et al.'s reference); both outputs say which.

ImageNet-sized models (224x224 inputs) are counted for 1000 classes, all others for 10.

Tracing every model takes tens of seconds, so the rows are cached in the data cache directory
(`models-<key>.json`), keyed by the source of the models, layers and counters and by the jax and
flax versions: an edit to any of them computes the table anew; a damaged cache file is ignored and
rewritten.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from collections.abc import Iterable
from typing import Any


def _cache_file() -> pathlib.Path | None:
    """The cache file for this source and these versions (None when there is no writable cache)."""
    from importlib import metadata

    import nnbasics
    from nnbasics.data import cache_dir
    from nnbasics.files import WorkdirUnusable

    pkg = pathlib.Path(nnbasics.__file__).parent
    h = hashlib.sha256()
    for f in sorted([*(pkg / "models").rglob("*.py"), *(pkg / "nn").rglob("*.py"), pkg / "analysis" / "model_stats.py",
                     pathlib.Path(__file__)]):
        h.update(f.relative_to(pkg).as_posix().encode() + b"\0" + f.read_bytes())
    for dist in ("jax", "flax"):
        try:
            h.update(f"{dist} {metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            h.update(dist.encode())
    try:
        return cache_dir() / f"models-{h.hexdigest()[:20]}.json"
    except WorkdirUnusable:
        return None


def _read_cache(path: pathlib.Path | None) -> dict[str, dict[str, Any]]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8")) if path is not None and path.exists() else {}
    except (OSError, ValueError):
        return {}  # damaged: computed anew and rewritten
    return rows if isinstance(rows, dict) and all(isinstance(v, dict) for v in rows.values()) else {}


def model_rows(names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One dict per model: name, input_shape, params, macs, receptive_field, reference_params, family.

    A model that needs more than a name to be built (no registered input shape) gets None values."""
    from nnbasics.models import model_names

    path = _cache_file()
    cached = _read_cache(path)
    names = list(names if names is not None else model_names())
    missing = [n for n in names if n not in cached]
    if missing:
        cached.update({r["name"]: r for r in _compute_rows(missing)})
        if path is not None:
            from nnbasics.files import atomic_write_json

            try:
                atomic_write_json(path, cached)
            except OSError:
                pass  # a cache that cannot be written only costs time
    return [dict(cached[n]) for n in names]


def _compute_rows(names: list[str]) -> list[dict[str, Any]]:
    from nnbasics.analysis.model_stats import model_stats
    from nnbasics.models import model_info

    rows = []
    for name in names:
        info = model_info(name)
        row: dict[str, Any] = {"name": name, "input_shape": None, "params": None, "macs": None,
                               "receptive_field": None, "reference_params": info.get("reference_params"),
                               "family": info.get("family")}
        try:
            s = model_stats(name)
            row.update(input_shape=list(s.input_shape) if s.input_shape else None, params=s.params, macs=s.macs,
                       receptive_field=s.receptive_field)
        except Exception as e:  # noqa: BLE001 - one model that cannot be traced must not hide the rest
            row["error"] = f"{type(e).__name__}: {e}"
        rows.append(row)
    return rows


def _human(n: int | None, unit: str = "") -> str:
    if n is None:
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.2f} {suffix}{unit}"
    return f"{n}{unit}"


def models_table(as_json: bool = False, names: Iterable[str] | None = None) -> str:
    """The model listing as an aligned text table, or as a JSON list of objects with the keys
    name, input_shape, params, macs (and receptive_field, reference_params, family)."""
    rows = model_rows(names)
    if as_json:
        return json.dumps(rows, indent=2)
    header = ("model", "input", "parameters", "exact", "mult-adds", "RF (last map)", "reference")
    lines = []
    for r in rows:
        shape = "x".join(str(s) for s in r["input_shape"]) if r["input_shape"] else "-"
        ref = r["reference_params"]
        check = "" if ref is None or r["params"] is None else ("= " if ref == r["params"] else "!= ") + f"{ref:,}"
        lines.append((
            r["name"], shape, _human(r["params"]), f"{r['params']:,}" if r["params"] is not None else "-",
            _human(r["macs"]), "-" if r["receptive_field"] is None else f"{r['receptive_field']} px", check,
        ))
    widths = [max(len(h), *(len(row[i]) for row in lines)) if lines else len(h) for i, h in enumerate(header)]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i in (0, 1, 6) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(row) for row in lines]
    out.append("parameters: trainable (BatchNorm scale/bias, not running statistics); mult-adds: convolutions and "
               "linear layers of one forward pass (torchvision's convention); RF (last map): receptive field of a unit of "
               "the last spatial feature map, after any pooling that follows the last convolution (AlexNet 195 px after "
               "pool5; `nnbasics run receptive_fields` reports it up to the last convolution: 163 px at conv5).")
    return "\n".join(out)
