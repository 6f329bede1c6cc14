"""Config plumbing: command-line overrides of an ml_collections ConfigDict, checked up front.

`apply_overrides(cfg, ["--config.optimizer.learning_rate=0.05", "seeds=(0,1)"])` sets values by
dotted path, parsing Python literals, and rejects unknown keys (naming the closest valid ones)
and values of the wrong type before anything is compiled.
"""

from __future__ import annotations

import ast
import copy
from typing import Any, Iterable

import ml_collections

from nnbasics.registry import closest

MAX_STEPS = 10**9  # ~a year of steps at 30 per second: a larger steps/batch_size/eval_every is a typo


class ConfigError(ValueError):
    """A bad config key or value; the message says what is wrong and what is valid."""


def flat_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Every dotted key path in a (nested) ConfigDict."""
    keys = []
    for k in cfg.keys():
        v = cfg[k]
        path = f"{prefix}{k}"
        keys.append(path)
        if isinstance(v, ml_collections.ConfigDict):
            keys.extend(flat_keys(v, path + "."))
    return keys


def parse_value(text: str) -> Any:
    """A Python literal if it parses as one (numbers, tuples, lists, None, True), else the string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _coerce(old: Any, new: Any, key: str) -> Any:
    if old is None or new is None:
        return new
    if isinstance(old, bool):
        if isinstance(new, bool):
            return new
        raise ConfigError(f"config.{key} must be true or false, got {new!r}")
    if isinstance(old, int):
        if isinstance(new, int) and not isinstance(new, bool):
            return new
        if isinstance(new, float) and new.is_integer():
            return int(new)
        raise ConfigError(f"config.{key} must be an integer, got {new!r}")
    if isinstance(old, float):
        if isinstance(new, (int, float)) and not isinstance(new, bool):
            return float(new)
        raise ConfigError(f"config.{key} must be a number, got {new!r}")
    if isinstance(old, (tuple, list)):
        if isinstance(new, (int, float, str)) and not isinstance(new, bool):
            new = (new,)
        if not isinstance(new, (tuple, list)):
            raise ConfigError(f"config.{key} must be a list, e.g. '(1, 2)', got {new!r}")
        return tuple(new) if isinstance(old, tuple) else list(new)
    if isinstance(old, str):
        if isinstance(new, str):
            return new
        return str(new)
    return new


def set_value(cfg: ml_collections.ConfigDict, key: str, value: Any) -> None:
    """Set `key` (dotted) to `value`, checking the key exists and coercing the type."""
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            valid = flat_keys(cfg)
            hint = closest(key, valid)
            msg = f"unknown config key {key!r}"
            if hint:
                msg += f"; did you mean {', '.join(repr(h) for h in hint)}?"
            raise ConfigError(msg + f" Valid keys: {', '.join(valid)}")
        if i < len(parts) - 1:
            node = node[part]
    last = parts[-1]
    old = node[last]
    if isinstance(old, ml_collections.ConfigDict):
        raise ConfigError(f"config.{key} is a group; set one of its keys: {', '.join(flat_keys(old, key + '.'))}")
    new = _coerce(old, value, key)
    try:
        with node.ignore_type():
            node[last] = new
    except Exception as e:  # noqa: BLE001 - re-raised with the key named
        raise ConfigError(f"config.{key}: cannot set {new!r}: {e}") from e


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
    """A copy of `cfg` with each 'config.KEY=VALUE' (leading dashes and 'config.' optional) applied."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        text = item.lstrip("-")
        if text.startswith("config."):
            text = text[len("config."):]
        if "=" not in text:
            raise ConfigError(f"override {item!r} must look like --config.KEY=VALUE")
        key, raw = text.split("=", 1)
        set_value(cfg, key.strip(), parse_value(raw))
    return cfg


def apply_dict(cfg: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """A copy of `cfg` with {dotted key: value} applied (how sweeps are written)."""
    cfg = copy.deepcopy(cfg)
    for k, v in overrides.items():
        set_value(cfg, k, v)
    return cfg
