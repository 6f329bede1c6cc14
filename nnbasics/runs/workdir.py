"""The work-directory contract: config.json, metrics.jsonl, claims.json, figures/*.png, report.md.

Every file but the append-only metrics log is written atomically (temp file + rename), so an
interrupted run never leaves a half-written result.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys
import time
from typing import Any, Iterable, Iterator

from nnbasics.files import (  # noqa: F401 - the work directory's file primitives, re-exported for its users
    WorkdirUnusable,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    ensure_writable,
    is_main_process,
    read_json,
    to_json,
)


class WorkdirBusy(RuntimeError):
    """Another live process (`holder`: its pid, command and start time) is writing the same work directory."""

    def __init__(self, message: str, holder: str = "another process"):
        super().__init__(message)
        self.holder = holder


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, what: str = "the run") -> Iterator[None]:
    """Hold `path/.lock` (an advisory `flock`) while writing the work directory: a second writer is
    refused with the holder's pid, command and start time. The kernel drops the lock when its
    process dies, so a lock left by a killed run is simply taken over."""
    import fcntl

    p = pathlib.Path(path)
    p.mkdir(parents=True, exist_ok=True)
    f = _open_lock(p / ".lock")
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise WorkdirBusy(f"{p} is being written by {holder}; wait for it to finish (or stop it) before running "
                              f"{what} there, or choose another --workdir / --root", holder) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} ({' '.join(sys.argv[:3])}), started {time.strftime('%Y-%m-%d %H:%M:%S')}")
        f.flush()
        yield
    finally:
        f.close()  # releases the lock


def _open_lock(lock: pathlib.Path):
    """Open (create) the lock file itself, never what a symlink at its place points to: a `.lock` that
    is a link, a directory or anything but a regular file is refused (WorkdirUnusable), so nobody with
    write access to a shared directory can make a run overwrite another file."""
    import errno
    import stat

    remedy = f"remove it (rm -r {lock}) and run again, or choose another --workdir / --root"
    try:
        st = os.lstat(lock)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise WorkdirUnusable(f"cannot check the lock file {lock}: {e.strerror or e}. {remedy}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = ("a symbolic link (to " + os.readlink(lock) + ")" if stat.S_ISLNK(st.st_mode)
                else "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file")
        raise WorkdirUnusable(f"the lock file {lock} is {kind}, not a regular file; it is left untouched: {remedy}")
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(lock, flags, 0o666)
    except OSError as e:  # replaced by a link or a directory between the check and the open
        if e.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise WorkdirUnusable(f"the lock file {lock} is not a regular file (a symbolic link or a directory); "
                                  f"it is left untouched: {remedy}") from None
        raise WorkdirUnusable(f"cannot open the lock file {lock}: {e.strerror or e}. {remedy}") from None
    f = os.fdopen(fd, "a+", encoding="utf-8")
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device that appeared in between
        f.close()
        raise WorkdirUnusable(f"the lock file {lock} is not a regular file; it is left untouched: {remedy}")
    return f


def default_workdir(name: str, preset: str, root: str | os.PathLike = "runs", seed_offset: int = 0) -> pathlib.Path:
    """runs/NAME (full), runs/NAME-quick, runs/NAME-quick-seed100 (seeds shifted by 100)."""
    base = name if preset == "full" else f"{name}-{preset}"
    return pathlib.Path(root) / (f"{base}-seed{seed_offset}" if seed_offset else base)


class MetricsWriter:
    """Append-only JSON lines; every line is flushed so a crash keeps what was written."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def restore(self, run: str | None, history: list[dict[str, Any]]) -> int:
        """Make the rows of `run` exactly `history` (the rows a checkpoint holds), atomically: rows
        written after the checkpoint are dropped (they are recomputed), rows lost from a damaged file
        are written again. The run's rows move after every other training run's, so a resumed
        experiment's file lists its runs in the order it trains them, as an uninterrupted one does,
        also when a run that had finished without a checkpoint is trained again. Returns how many
        rows were rebuilt."""
        rows = read_metrics(self.path)
        mine = {i for i, r in enumerate(rows) if r.get("run") == run and "step" in r}
        others = [r for i, r in enumerate(rows) if i not in mine]
        kept = {json.dumps(rows[i], sort_keys=True) for i in mine}
        rebuilt = sum(json.dumps(json.loads(to_json(h, indent=None)), sort_keys=True) not in kept for h in history)
        new = others + [json.loads(to_json(h, indent=None)) for h in history]
        text = "".join(to_json(r, indent=None) + "\n" for r in new)
        if not self.path.exists() or self.path.read_text(encoding="utf-8") != text:
            atomic_write_text(self.path, text)
        if rebuilt:
            import warnings

            warnings.warn(f"{self.path}: {rebuilt} metrics rows of {run or 'the run'} up to step "
                          f"{history[-1]['step']} were missing or damaged; rebuilt them from the checkpoint",
                          stacklevel=2)
        return rebuilt

    def write(self, row: dict[str, Any]) -> None:
        if not is_main_process():
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(to_json(row, indent=None) + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete lines of a metrics.jsonl (a torn last line is skipped)."""
    rows = []
    p = pathlib.Path(path)
    if not p.exists():
        return rows
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def metrics_digest(path: str | os.PathLike) -> dict[str, Any] | None:
    """{'rows', 'sha256'} of a metrics.jsonl as a run finished it (None: the run wrote none), stored in
    claims.json so that a later reuse can tell an intact file from a damaged one."""
    import hashlib

    p = pathlib.Path(path)
    if not p.exists():
        return None
    data = p.read_bytes()
    return {"rows": sum(1 for line in data.splitlines() if line.strip()), "sha256": hashlib.sha256(data).hexdigest()}


def metrics_damage(path: str | os.PathLike, digest: Any = None) -> str | None:
    """Why the metrics.jsonl of a finished run is not what the run finished with (None: intact):
    lines that do not parse (cut mid-line, garbage), or, against the `digest` the run stored, rows
    missing or changed, or the file gone."""
    import hashlib

    p = pathlib.Path(path)
    digest = digest if isinstance(digest, dict) else None
    if not p.exists():
        return "is missing" if digest and digest.get("rows") else None
    try:
        data = p.read_bytes()
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    lines = data.splitlines()
    bad = []
    for i, line in enumerate(lines, 1):
        if line.strip():
            try:
                if not isinstance(json.loads(line), dict):
                    bad.append(i)
            except ValueError:
                bad.append(i)
    if bad:
        return f"has {len(bad)} unreadable line{'s' if len(bad) > 1 else ''} (line {bad[0]} of {len(lines)}: cut or damaged)"
    if digest:
        rows = sum(1 for line in lines if line.strip())
        if rows != digest.get("rows"):
            return f"has {rows} rows where the finished run wrote {digest.get('rows')}"
        if hashlib.sha256(data).hexdigest() != digest.get("sha256"):
            return "differs from the file the finished run wrote"
    return None


class Workdir:
    """A run's directory, with helpers for the files of the contract. What `fit(..., workdir=wd)`
    reads: `metrics` (the metrics.jsonl writer), `checkpoint_dir` and `checkpoint_every` (None until
    `enable_checkpoints`), and `interrupt_dir`, where a Ctrl-C writes its checkpoint."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.metrics = MetricsWriter(self.path / "metrics.jsonl")
        self.checkpoint_dir: pathlib.Path | None = None
        self.checkpoint_every: int = 0
        self.interrupt_dir = self.path / "checkpoints"
        self.figures: list[str] = []
        self.fits: list[dict[str, Any]] = []  # one entry per `fit` call: steps, members, seconds, compile seconds
        # training runs that finished without a checkpoint, checkpointed by `fit` if a stop signal comes later
        self.finished_fits: list[Any] = []

    def record_fit(self, tag: str | None, *, steps: int, members: int, seconds: float, compile_seconds: float) -> None:
        self.fits.append({"tag": tag, "steps": int(steps), "members": int(members), "seconds": round(seconds, 3),
                          "compile_seconds": round(compile_seconds, 3)})

    def training_summary(self) -> dict[str, Any] | None:
        """The fits of this run together: how many, steps, member-steps (a step of one seed or setting),
        seconds in fit, of which compiling; None when nothing trained through `fit`."""
        if not self.fits:
            return None
        return {"fits": len(self.fits), "steps": sum(f["steps"] for f in self.fits),
                "member_steps": sum(f["steps"] * f["members"] for f in self.fits),
                "seconds": round(sum(f["seconds"] for f in self.fits), 2),
                "compile_seconds": round(sum(f["compile_seconds"] for f in self.fits), 2)}

    def __truediv__(self, other: str) -> pathlib.Path:
        return self.path / other

    def __fspath__(self) -> str:
        return str(self.path)

    def save_figure(self, fig: Any, name: str, dpi: int = 110) -> str:
        """Save a matplotlib figure atomically as figures/<name>.png and close it."""
        import io

        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        rel = f"figures/{name}.png"
        atomic_write_bytes(self.path / rel, buf.getvalue())
        if rel not in self.figures:
            self.figures.append(rel)
        return rel

    def enable_checkpoints(self, every: int = 0) -> None:
        """Checkpoint training under checkpoints/ every `every` steps (0: at the end of each fit)."""
        self.checkpoint_dir = self.path / "checkpoints"
        self.checkpoint_every = int(every)

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.path / name, obj)

    def list_figures(self) -> Iterable[str]:
        d = self.path / "figures"
        return sorted(f"figures/{p.name}" for p in d.glob("*.png")) if d.exists() else []
