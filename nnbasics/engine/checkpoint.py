"""Orbax checkpoints of a training run, with a fingerprint so a checkpoint of a different model
or config is refused (naming what differs) instead of silently resumed, and a digest so a
corrupted or truncated checkpoint is detected and the previous one used instead (with a warning).

A checkpoint holds the state pytree (params, batch_stats, opt_state, step, rng, model_args: the
rng as raw key data) and, as JSON, the fingerprint, the SHA-256 digest of the state's bytes and
the metric rows written so far. Once Orbax has finished a step, the size and SHA-256 of each of
its files go into `nnbasics_files.json` in the step's directory; a restore checks them first, so
damaged files are found before Orbax reads them (it does not notice every damaged file, and a
failed read leaves its asynchronous machinery printing errors). The state digest covers a
checkpoint whose file list was never written (a kill right after Orbax finished).
"""

from __future__ import annotations

import contextlib
import hashlib
import pathlib
import time
import warnings
from typing import Any, Iterator

import jax
import numpy as np


class CheckpointMismatch(ValueError):
    """The checkpoint was written by a different model or config."""


FILE_LIST = "nnbasics_files.json"


def file_list(step_dir: pathlib.Path) -> dict[str, list[Any]]:
    """{relative path: [size, sha256]} of every file under a checkpoint step's directory."""
    out = {}
    for p in sorted(step_dir.rglob("*")):
        if p.is_file() and p.name != FILE_LIST:
            out[p.relative_to(step_dir).as_posix()] = [p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()]
    return out


def file_list_problem(step_dir: pathlib.Path) -> str | None:
    """Why the step's files differ from the list written with them (None: they match, or no list)."""
    import json

    listed = step_dir / FILE_LIST
    if not listed.exists():
        return None
    try:
        want = json.loads(listed.read_text())
    except (OSError, ValueError) as e:
        return f"its file list cannot be read ({type(e).__name__})"
    have = file_list(step_dir)
    for name, (size, digest) in want.items():
        if name not in have:
            return f"{name} is missing"
        if have[name][0] != size:
            return f"{name} has {have[name][0]} bytes, {size} were written"
        if have[name][1] != digest:
            return f"{name} has changed since it was written (SHA-256 differs)"
    return None


class CorruptCheckpointWarning(UserWarning):
    """A checkpoint could not be read back intact; an earlier one (or a fresh start) is used."""


def _state_tree(state: Any) -> dict[str, Any]:
    return {
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
        "step": state.step,
        "rng": jax.random.key_data(state.rng),
        "model_args": state.model_args,
    }


def _host(leaf: Any) -> np.ndarray:
    """This process's copy of a (replicated) array as numpy, also when it spans several processes."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        leaf = leaf.addressable_data(0)
    return np.asarray(jax.device_get(leaf))


def state_digest(tree: Any) -> str:
    """SHA-256 over every leaf's dtype, shape and bytes, in tree order."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = np.ascontiguousarray(_host(leaf))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


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
        self.keep = max(1, int(keep))
        self.manager = self._open()

    def _open(self) -> Any:
        options = self.ocp.CheckpointManagerOptions(max_to_keep=self.keep, create=True)
        with _orbax_logs_as_warnings(self.directory):  # opening reads every step's metadata
            return self.ocp.CheckpointManager(self.directory, options=options)

    def save(self, state: Any, history: list[dict[str, Any]]) -> None:
        step = int(_host(state.step).reshape(-1)[0])
        tree = _state_tree(state)
        meta = {"fingerprint": self.fingerprint, "history": _jsonable(history), "step": step,
                "digest": state_digest(tree)}
        if step in self.manager.all_steps():  # e.g. saved at the end of a chunk, then again on SIGINT
            return
        self.manager.save(
            step,
            args=self.ocp.args.Composite(state=self.ocp.args.StandardSave(tree), meta=self.ocp.args.JsonSave(meta)),
            force=True,
        )
        self.manager.wait_until_finished()
        step_dir = self.directory / str(step)
        if jax.process_index() == 0 and step_dir.is_dir():
            from nnbasics.files import atomic_write_json

            atomic_write_json(step_dir / FILE_LIST, file_list(step_dir))

    def restore(self, template_state: Any) -> tuple[Any, list[dict[str, Any]]] | None:
        """(state, history) from the latest intact checkpoint, or None if there is none.

        A checkpoint that cannot be read, or whose state does not match its digest, is moved
        aside (to `<step>.corrupt-<time>`) with a CorruptCheckpointWarning and the previous one is
        tried. A checkpoint of a different run raises CheckpointMismatch: that is a user error,
        not damage, and falling back would silently train something else. What Orbax logs while
        reading (say `ERROR:absl:Failed to json parse Metadata file`, a part it goes on without) comes
        as a CorruptCheckpointWarning naming the directory, not as a stray log line."""
        with _orbax_logs_as_warnings(self.directory):
            return self._restore(template_state)

    def _restore(self, template_state: Any) -> tuple[Any, list[dict[str, Any]]] | None:
        for step in sorted(self.manager.all_steps(), reverse=True):
            problem = file_list_problem(self.directory / str(step))
            if problem:
                self._set_aside(step, problem)
                continue
            try:
                meta_args = self.ocp.args.Composite(meta=self.ocp.args.JsonRestore())
                meta = self.manager.restore(step, args=meta_args)["meta"]
                fp = meta["fingerprint"]
            except Exception as e:  # noqa: BLE001 - any failure to read is damage
                self._set_aside(step, f"its metadata cannot be read ({type(e).__name__}: {str(e)[:200]})")
                continue
            diff = fingerprint_diff(fp, self.fingerprint)
            if diff:
                raise CheckpointMismatch(
                    f"the checkpoint in {self.directory} was written by a different run; refusing to resume:\n  "
                    + "\n  ".join(diff)
                    + "\nUse another --workdir, or --force to start over."
                )
            try:
                state = self._restore_state(step, template_state)
                ok = meta.get("digest") in (None, state_digest(_state_tree(state)))
                reason = "its arrays do not match the digest written with them"
            except Exception as e:  # noqa: BLE001
                ok, reason = False, f"its arrays cannot be read ({type(e).__name__}: {str(e)[:200]})"
            if not ok:
                self._set_aside(step, reason)
                continue
            return state, meta["history"]
        return None

    def _set_aside(self, step: int, reason: str) -> None:
        earlier = [s for s in self.manager.all_steps() if s < step]
        then = f"resuming from step {max(earlier)}" if earlier else "no earlier checkpoint: starting from scratch"
        warnings.warn(f"checkpoint at step {step} in {self.directory} is damaged: {reason}; it is moved aside "
                      f"and {then}", CorruptCheckpointWarning, stacklevel=3)
        if jax.process_index() == 0:
            src = self.directory / str(step)
            if src.exists():
                src.rename(self.directory / f"{step}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        self.manager.close()  # a fresh manager: a failed read can leave the old one's async machinery broken
        self.manager = self._open()

    def _restore_state(self, step: int, template_state: Any) -> Any:
        template = _state_tree(template_state)
        restored = self.manager.restore(
            step, args=self.ocp.args.Composite(state=self.ocp.args.StandardRestore(template))
        )["state"]
        return template_state.replace(
            params=restored["params"],
            batch_stats=restored["batch_stats"],
            opt_state=restored["opt_state"],
            step=restored["step"],
            rng=jax.random.wrap_key_data(restored["rng"], impl=jax.random.key_impl(template_state.rng)),
            model_args=restored["model_args"],
        )

    def close(self) -> None:
        self.manager.close()


@contextlib.contextmanager
def _orbax_logs_as_warnings(directory: pathlib.Path) -> Iterator[None]:
    """Orbax's warnings and errors (absl's logger) within the block become one CorruptCheckpointWarning
    each, naming `directory`, after it: the user sees nnbasics's one-line warnings, not `ERROR:absl:...`."""
    import logging

    logger, records = logging.getLogger("absl"), []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep, propagate = _Keep(logging.WARNING), logger.propagate
    logger.addHandler(keep)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(keep)
        logger.propagate = propagate
        for r in records:
            msg = " ".join(r.getMessage().split())
            warnings.warn(f"checkpoints in {directory}: Orbax reported while reading them: "
                          f"{msg[:300]}{'...' if len(msg) > 300 else ''}", CorruptCheckpointWarning, stacklevel=4)


def _jsonable(obj: Any) -> Any:
    import json

    from nnbasics.files import to_json

    return json.loads(to_json(obj, indent=None))
