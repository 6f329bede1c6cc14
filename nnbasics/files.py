"""Files written safely: JSON that numpy values survive, atomic writes (temp file + fsync +
rename, honouring the umask), and a check that a directory can take them, before any compile.

The engine (checkpoints) and run management (work directories, reports) both write through here.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
import sys
import tempfile
from typing import Any

import numpy as np


def _default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _clean(o: Any) -> Any:
    """Replace NaN/inf by None-safe strings so the JSON stays standard."""
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def to_json(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(_clean(json.loads(json.dumps(obj, default=_default))), indent=indent)


def is_main_process() -> bool:
    """Only process 0 of a multi-host run writes results."""

    jax = sys.modules.get("jax")
    return jax is None or jax.process_index() == 0


class WorkdirUnusable(OSError):
    """The work directory cannot be created or written, or its disk is (nearly) full."""


MIN_FREE_BYTES = 32 * 2**20  # metrics, figures and reports of one experiment fit easily in this


def broken_link(path: str | os.PathLike) -> str | None:
    """What is wrong with the first symbolic link on `path` (itself or a parent) that leads nowhere: a loop
    or a link to something that does not exist; None when there is none."""
    import errno

    p = pathlib.Path(path)
    for q in [*reversed(p.parents), p]:
        if not q.is_symlink():
            continue
        try:
            os.stat(q)
            continue
        except OSError as e:
            target = os.readlink(q)
            if e.errno == errno.ELOOP:
                return f"{q} is a symbolic link that loops ({q} -> {target} -> ... never reaches a directory)"
            if e.errno == errno.ENOENT:
                return f"{q} is a symbolic link to {target}, which does not exist"
            return f"{q} is a symbolic link to {target}, which cannot be reached ({e.strerror or e})"
    return None


def ensure_writable(path: str | os.PathLike, need_bytes: int = 0, what: str = "the run") -> None:
    """Fail early, before any compile, if `path` cannot hold `need_bytes` more (plus a margin).

    Creates `path`, writes and removes a probe file, and checks the free space of its disk, so a
    read-only or full file system gives one clear message instead of an error hours into a run.
    The margin is NNBASICS_MIN_FREE_MB (default 32) MiB."""
    p = pathlib.Path(path)
    hint = "Choose another --workdir / --root, or fix the permissions."
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        link = broken_link(p)
        if link:  # mkdir says "File exists" or "Too many levels of symbolic links": say which link and why
            raise WorkdirUnusable(f"cannot use {p} for {what}: {link}; remove or repoint the link, or choose another "
                                  "--workdir / --root") from None
        file = next((q for q in [*reversed(p.parents), p] if q.exists() and not q.is_dir()), None)
        if file is not None:  # mkdir says "File exists" or "Not a directory"
            raise WorkdirUnusable(f"cannot create the directory {p} for {what}: {file} is a file, not a directory; "
                                  "choose another --workdir / --root") from None
        raise WorkdirUnusable(f"cannot create the directory {p} for {what}: {e.strerror or e}. {hint}") from None
    probe = p / f".nnbasics-write-test-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"0")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise WorkdirUnusable(f"cannot write in {p} ({what}): {e.strerror or e}. {hint}") from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    margin = int(float(os.environ.get("NNBASICS_MIN_FREE_MB", MIN_FREE_BYTES / 2**20)) * 2**20)
    free = shutil.disk_usage(p).free
    if free < int(need_bytes) + margin:
        raise WorkdirUnusable(
            f"not enough free disk space in {p} for {what}: {free / 2**20:.1f} MiB free, at least "
            f"{(int(need_bytes) + margin) / 2**20:.1f} MiB needed ({int(need_bytes) / 2**20:.1f} MiB of data + "
            f"{margin / 2**20:.0f} MiB margin, NNBASICS_MIN_FREE_MB). Free some space or choose another --workdir."
        )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, fsync, then rename over `path` (process 0 only)."""
    if not is_main_process():
        return
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are as readable as metrics.jsonl
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, to_json(obj) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
