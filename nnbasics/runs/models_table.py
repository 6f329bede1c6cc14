"""The `nnbasics models [--json]` listing: every registered model with its input shape, parameters,
multiply-adds per example and theoretical receptive field, all computed from the model itself
(`nnbasics.analysis.model_stats`: abstract evaluation, nothing is allocated or run).

The receptive field here is that of one unit of the last spatial feature map, the one the classifier
flattens or pools globally, so it includes a pooling layer after the last convolution (AlexNet:
195 px after pool5). `nnbasics run receptive_fields` counts up to the last convolution instead
(AlexNet: 163 px at conv5, Araujo et al.'s reference); both outputs say which.

ImageNet-sized models (224x224 inputs) are counted for 1000 classes, all others for 10.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def model_rows(names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One dict per model: name, input_shape, params, macs, receptive_field, reference_params, family.

    A model that needs more than a name to be built (no registered input shape) gets None values."""
    from nnbasics.analysis.model_stats import model_stats
    from nnbasics.models import model_info, model_names

    rows = []
    for name in names if names is not None else model_names():
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
