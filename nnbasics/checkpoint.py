"""Orbax checkpoints of a training run, with a fingerprint so a checkpoint of a different model
or config is refused (naming what differs) instead of silently resumed.

A checkpoint holds the state pytree (params, batch_stats, opt_state, step, rng, lr_scale: the
rng as raw key data) and, as JSON, the fingerprint and the metric rows written so far.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np


class CheckpointMismatch(ValueError):
    """The checkpoint was written by a different model or config."""


def _state_tree(state: Any) -> dict[str, Any]:
    return {
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
        "step": state.step,
        "rng": jax.random.key_data(state.rng),
        "lr_scale": state.lr_scale,
    }


def fingerprint_diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints."""
    out = []
    for k in sorted(set(saved) | set(current)):
        a, b = saved.get(k), current.get(k)
        if a != b:
            out.append(f"{k}: checkpoint has {a!r}, this run has {b!r}")
    return out


class Checkpointer:
    """Saves every `every` steps (and at the end), keeps the last `keep`; restores the latest."""

    def __init__(self, directory: str | pathlib.Path, fingerprint: dict[str, Any], keep: int = 2):
        import orbax.checkpoint as ocp

        self.ocp = ocp
        self.directory = pathlib.Path(directory).absolute()
        self.fingerprint = _jsonable(fingerprint)
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max(1, int(keep)), create=True)
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: Any, history: list[dict[str, Any]]) -> None:
        step = int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])
        meta = {"fingerprint": self.fingerprint, "history": _jsonable(history), "step": step}
        self.manager.save(
            step,
            args=self.ocp.args.Composite(
                state=self.ocp.args.StandardSave(_state_tree(state)), meta=self.ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def restore(self, template_state: Any) -> tuple[Any, list[dict[str, Any]]] | None:
        """(state, history) from the latest checkpoint, or None if there is none."""
        step = self.latest_step()
        if step is None:
            return None
        meta = self.manager.restore(step, args=self.ocp.args.Composite(meta=self.ocp.args.JsonRestore()))["meta"]
        diff = fingerprint_diff(meta["fingerprint"], self.fingerprint)
        if diff:
            raise CheckpointMismatch(
                f"the checkpoint in {self.directory} was written by a different run; refusing to resume:\n  "
                + "\n  ".join(diff)
                + "\nUse another --workdir, or --force to start over."
            )
        template = _state_tree(template_state)
        restored = self.manager.restore(
            step, args=self.ocp.args.Composite(state=self.ocp.args.StandardRestore(template))
        )["state"]
        state = template_state.replace(
            params=restored["params"],
            batch_stats=restored["batch_stats"],
            opt_state=restored["opt_state"],
            step=restored["step"],
            rng=jax.random.wrap_key_data(restored["rng"], impl=jax.random.key_impl(template_state.rng)),
            lr_scale=restored["lr_scale"],
        )
        return state, meta["history"]

    def close(self) -> None:
        self.manager.close()


def _jsonable(obj: Any) -> Any:
    import json

    from nnbasics.workdir import to_json

    return json.loads(to_json(obj, indent=None))
