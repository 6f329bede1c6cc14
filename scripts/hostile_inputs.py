"""Hostile inputs, as a user would try them: bad values, damaged files, concurrent writers, signals.

    python scripts/hostile_inputs.py [--only SUBSTRING] [--keep DIR]

Each case runs the `nnbasics` command (a fresh process, as a user would) in a scratch directory
with its own cache (NNBASICS_CACHE) and is classified:
  clean      the expected exit status, no traceback, and the expected words in the output
  traceback  a Python traceback reached the user
  wrong      another exit status, or the message lacks what it should name
and a table and the counts are printed (exit status 1 unless every case is clean). The cases cover
the list of issue 16 (bad config values, damaged caches and result files, a second writer, Ctrl-C
and SIGTERM, sweeps and collect on hostile files) and issue 34's (locks, links and files that cannot be
used, warnings a setting hid, stop signals at every moment of training); the tests check each of them
too, this script re-runs them end to end through the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable

from nnbasics.engine import interrupt

SMOKE = ["--smoke"]
PHOTOS = ["--config.cnn.data=photos"]  # activations' CNN on the photo crops (a cached data set)


class Case:
    def __init__(self, name: str, argv: list[str] | Callable[[pathlib.Path], list[str]], rc: tuple[int, ...],
                 words: tuple[str, ...] = (), setup: Callable[[pathlib.Path], None] | None = None,
                 check: Callable[[pathlib.Path], str | None] | None = None, needs_non_root: bool = False,
                 env: dict[str, str] | None = None, plain_env: dict[str, str] | None = None,
                 forbid: tuple[str, ...] = ()):
        self.name, self.argv, self.rc, self.words, self.setup, self.check = name, argv, rc, words, setup, check
        self.env = env or {}  # extra environment variables (paths relative to the scratch directory)
        self.plain_env = plain_env or {}  # extra environment variables, as given
        self.forbid = forbid  # words that must not be in the output
        self.needs_non_root = needs_non_root  # root ignores file permissions: the case cannot happen


def nnbasics(argv: list[str], cwd: pathlib.Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnbasics.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


# ------------------------------------------------------------------------------ setups and checks


def _scratch_env(d: pathlib.Path) -> dict[str, str]:
    """The environment of every command of a case: its own cache in the scratch directory, the CPU."""
    return {**os.environ, "NNBASICS_CACHE": str(d / "cache"), "JAX_PLATFORMS": "cpu"}


def _setup_run(d: pathlib.Path, argv: list[str]) -> subprocess.CompletedProcess:
    """A command a case's setup needs to have finished (exit 0 or 1: claims may fail at smoke size)."""
    out = nnbasics(["--quiet", *argv], d, _scratch_env(d))
    assert out.returncode in (0, 1), out.stderr
    return out


def _finished_run(d: pathlib.Path, name: str = "momentum") -> pathlib.Path:
    _setup_run(d, ["run", name, *SMOKE, "--workdir", str(d / "wd")])
    return d / "wd"


def _damage_config(d: pathlib.Path) -> None:
    (_finished_run(d) / "config.json").write_text("{ not json")


def _cut_claims(d: pathlib.Path) -> None:
    p = _finished_run(d) / "claims.json"
    p.write_text(p.read_text()[:50])


def _cut_metrics(d: pathlib.Path) -> None:
    p = _finished_run(d, "perceptron_xor") / "metrics.jsonl"
    p.write_text(p.read_text()[:-40])


def _mnist1d_cache(damage: Callable[[pathlib.Path], None]) -> Callable[[pathlib.Path], None]:
    def setup(d: pathlib.Path) -> None:
        src = pathlib.Path(os.environ.get("NNBASICS_CACHE") or pathlib.Path.home() / ".cache" / "nnbasics")
        (d / "cache").mkdir(exist_ok=True)
        f = next(src.glob("mnist1d_*.npz"), None)
        if f is None:
            raise RuntimeError(f"no MNIST-1D cache in {src}: run `nnbasics run mnist1d --smoke` once first")
        shutil.copy(f, d / "cache" / f.name)
        damage(d / "cache" / f.name)
    return setup


def _truncate(p: pathlib.Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip(p: pathlib.Path) -> None:
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))


def _missing_key(p: pathlib.Path) -> None:
    import numpy as np

    with np.load(p) as z:
        arrays = {k: z[k] for k in z.files if k != "t"}
    with open(p, "wb") as f:
        np.savez(f, **arrays)


def _nan_values(p: pathlib.Path) -> None:
    import numpy as np

    with np.load(p) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["x"] = np.full_like(arrays["x"], np.nan)
    with open(p, "wb") as f:
        np.savez(f, **arrays)


def _read_only_root(d: pathlib.Path) -> None:
    (d / "ro").mkdir()
    os.chmod(d / "ro", 0o555)


def _file_root(d: pathlib.Path) -> None:
    (d / "afile").write_text("x")


def _hostile_sweep(content: str | bytes) -> Callable[[pathlib.Path], None]:
    def setup(d: pathlib.Path) -> None:
        run = d / "sw" / "000-x"
        run.mkdir(parents=True)
        (run / "claims.json").write_bytes(content if isinstance(content, bytes) else content.encode())
        (run / "config.json").write_text("{}")
    return setup


def _reshape(key: str, fn: Callable) -> Callable[[pathlib.Path], None]:
    """A cache whose array `key` was changed by fn (a wrong shape, a length mismatch)."""
    def damage(p: pathlib.Path) -> None:
        import numpy as np

        with np.load(p) as z:
            arrays = {k: z[k] for k in z.files}
        arrays[key] = fn(arrays[key])
        with open(p, "wb") as f:
            np.savez(f, **arrays)
    return damage


def _photo_cache_truncated(d: pathlib.Path) -> None:
    """The photo crops' cache, cut in half (filled by a first smoke run in this directory)."""
    _setup_run(d, ["run", "activations", *SMOKE, *PHOTOS, "--workdir", str(d / "first")])
    files = list((d / "cache").glob("photos_*.npz"))
    if not files:
        raise RuntimeError("activations --smoke on photos wrote no photos_*.npz cache")
    for f in files:
        _truncate(f)


def _compile_cache_damaged(d: pathlib.Path) -> None:
    """Every entry of JAX's persistent compilation cache cut in half (filled by a first smoke run)."""
    _setup_run(d, ["run", "mnist1d", *SMOKE, "--workdir", str(d / "first")])
    entries = [p for p in (d / "cache" / "jax").rglob("*") if p.is_file()]
    if not entries:
        raise RuntimeError("the first run wrote no compilation cache entries")
    for f in entries:
        _truncate(f)


def _compile_cache_repaired(d: pathlib.Path) -> str | None:
    """The run after the repair reads the rebuilt entries without a warning."""
    out = _setup_run(d, ["run", "mnist1d", *SMOKE, "--workdir", str(d / "again")])
    return "the next run still warns about the cache" if "cache entr" in out.stderr else None


def _smoke_root(names: str) -> Callable[[pathlib.Path], None]:
    """A reproduce root r/ holding a finished smoke reproduction of `names`."""
    def setup(d: pathlib.Path) -> None:
        _setup_run(d, ["reproduce", *SMOKE, "--only", names, "--root", "r", "--jobs", "1"])
    return setup


def _keeps_both(d: pathlib.Path) -> str | None:
    names = {e.get("experiment") for e in json.loads((d / "r" / "claims.json").read_text()).get("experiments", [])}
    report = (d / "r" / "report.md").read_text()
    lost = [n for n in ("momentum", "perceptron_xor") if n not in names or n not in report]
    return f"the combined report lost {lost}" if lost else None


def _readme_setup(d: pathlib.Path) -> None:
    _smoke_root("momentum")(d)
    shutil.copy(pathlib.Path(__file__).resolve().parents[1] / "README.md", d / "README.md")
    (d / "README.orig").write_bytes((d / "README.md").read_bytes())


def _readme_unchanged(d: pathlib.Path) -> str | None:
    return None if (d / "README.md").read_bytes() == (d / "README.orig").read_bytes() else "README.md was rewritten"


def _garbage_tfds_info(d: pathlib.Path) -> None:
    import tensorflow_datasets as tfds

    info = d / "tfds" / "mnist" / str(tfds.builder_cls("mnist").VERSION) / "dataset_info.json"
    info.parent.mkdir(parents=True)
    info.write_text('{"name": "mnist", "vers')


def _umask_check(d: pathlib.Path) -> str | None:
    modes = {p.name: p.stat().st_mode & 0o777 for p in (d / "wd").iterdir() if p.is_file() and p.name != ".lock"}
    bad = {k: oct(v) for k, v in modes.items() if v != 0o644}
    return f"modes not 0644 under umask 022: {bad}" if bad else None


def _lock_symlink(d: pathlib.Path) -> None:
    (d / "wd").mkdir()
    (d / "precious.txt").write_text("someone else's file")
    (d / "wd" / ".lock").symlink_to(d / "precious.txt")


def _precious_kept(d: pathlib.Path) -> str | None:
    return None if (d / "precious.txt").read_text() == "someone else's file" else "the file the .lock links to was written"


def _lock_dir(d: pathlib.Path) -> None:
    (d / "wd" / ".lock").mkdir(parents=True)


def _readme_without_markers(d: pathlib.Path) -> None:
    _smoke_root("momentum")(d)
    (d / "README.md").write_text("# my notes\n")
    (d / "README.orig").write_bytes((d / "README.md").read_bytes())


def _html_claims(d: pathlib.Path) -> None:
    _finished_run(d)
    p = d / "wd" / "claims.json"
    doc = json.loads(p.read_text())
    doc["claims"][0]["claim"] = "<script>alert(1)</script>"
    p.write_text(json.dumps(doc))


def _report_md_inert(d: pathlib.Path) -> str | None:
    text = (d / "wd" / "report.md").read_text()
    return "raw <script> in report.md" if "<script>" in text else None


def _report_md_gone(d: pathlib.Path) -> None:
    _finished_run(d)
    (d / "wd" / "report.md").unlink()


def _report_md_back(d: pathlib.Path) -> str | None:
    return None if (d / "wd" / "report.md").is_file() else "report.md was not written again"


def _combined_damaged(d: pathlib.Path) -> None:
    _smoke_root("momentum,perceptron_xor")(d)
    (d / "r" / "claims.json").write_text("{trunc")


def _no_claims(d: pathlib.Path) -> str | None:
    return "files were written" if list(d.rglob("claims.json")) else None


def _symlink_loop(d: pathlib.Path) -> None:
    (d / "wd").symlink_to("wd")


def _dangling_link(d: pathlib.Path) -> None:
    (d / "wd").symlink_to("nowhere")


def _mnist1d_cache_cut(d: pathlib.Path) -> None:
    _mnist1d_cache(_truncate)(d)


def _interrupted_with_damaged_orbax_metadata(d: pathlib.Path) -> None:
    """A checkpointed run that did not finish (no claims.json), its last checkpoint's _CHECKPOINT_METADATA
    garbage and its file list gone (as after a kill just after Orbax finished writing)."""
    _setup_run(d, ["run", "mnist1d", *SMOKE, "--config.models=('mlp',)", "--checkpoint-every", "100",
                   "--workdir", str(d / "wd")])
    (d / "wd" / "claims.json").unlink()
    last = max((p for p in (d / "wd" / "checkpoints" / "mlp").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    (last / "nnbasics_files.json").unlink()
    (last / "_CHECKPOINT_METADATA").write_text("{garbage")


CASES = [
    # bad config values: rc 2 and a message naming the key, before anything is compiled
    Case("seed -1", ["run", "mnist1d", *SMOKE, "--config.seeds=(-1,)"], (2,), ("seeds",), check=_no_claims),
    Case("20-digit seed", ["run", "mnist1d", *SMOKE, "--config.seeds=(12345678901234567890,)"], (2,), ("seed",)),
    Case("repeated seed", ["run", "mnist1d", *SMOKE, "--config.seeds=(1,1)"], (2,), ("seed",)),
    Case("empty seeds", ["run", "mnist1d", *SMOKE, "--config.seeds=()"], (2,), ("seeds",)),
    Case("negative learning rates", ["run", "capacity", *SMOKE, "--config.learning_rates=(-1,)"], (2,),
         ("learning_rate",)),
    Case("steps 10^20", ["run", "mnist1d", *SMOKE, "--config.steps=99999999999999999999"], (2,), ("steps",)),
    Case("learning rate 1e999", ["run", "mnist1d", *SMOKE, "--config.optimizer.learning_rate=1e999"], (2,),
         ("learning_rate", "finite")),
    Case("learning rate nan", ["run", "mnist1d", *SMOKE, "--config.optimizer.learning_rate=nan"], (2,),
         ("learning_rate",)),
    Case("unknown key", ["run", "mnist1d", *SMOKE, "--config.stepz=10"], (2,), ("stepz", "did you mean")),
    Case("unknown experiment", ["run", "mnist1e", *SMOKE], (2,), ("did you mean",)),
    Case("unknown model", ["run", "mnist1d", *SMOKE, "--config.models=('mlq',)"], (2,), ("mlq",)),
    Case("code as a value", ["run", "mnist1d", *SMOKE, "--config.steps=__import__('os').getpid()"], (2,),
         ("steps",)),
    Case("batch larger than data", ["run", "mnist1d", *SMOKE, "--config.batch_size=100000"], (2,), ("batch",)),
    Case("data_dir on mnist1d", ["run", "mnist1d", *SMOKE, "--config.data_dir=/x"], (2,), ("data_dir",)),
    Case("empty --workdir", ["run", "mnist1d", *SMOKE, "--workdir", ""], (2,), ("--workdir",)),
    Case("--only empty", ["reproduce", *SMOKE, "--only", ","], (2,), ("--only",)),
    Case("--jobs -1", ["reproduce", *SMOKE, "--only", "momentum", "--jobs", "-1"], (2,), ("--jobs",)),
    Case("--shard 4/5 of 3 points", ["sweep", "mnist1d", "--sweep", "learning_rate", *SMOKE, "--shard", "4/5"], (2,),
         ("3 points",)),
    Case("--shard x", ["sweep", "mnist1d", "--sweep", "learning_rate", *SMOKE, "--shard", "x"], (2,), ("I/N",)),
    Case("unknown sweep", ["sweep", "mnist1d", "--sweep", "learning_rat", *SMOKE], (2,), ("did you mean",)),
    Case("seed 0.5", ["run", "mnist1d", *SMOKE, "--config.seeds=(0.5,)"], (2,), ("seed",)),
    Case("steps 0", ["run", "mnist1d", *SMOKE, "--config.steps=0"], (2,), ("steps",)),
    Case("steps not a number", ["run", "mnist1d", *SMOKE, "--config.steps=abc"], (2,), ("steps",)),
    Case("batch size 0", ["run", "mnist1d", *SMOKE, "--config.batch_size=0"], (2,), ("batch_size",)),
    Case("eval_every 0", ["run", "mnist1d", *SMOKE, "--config.eval_every=0"], (2,), ("eval_every",)),
    Case("learning rate -1", ["run", "mnist1d", *SMOKE, "--config.optimizer.learning_rate=-1"], (2,),
         ("learning_rate",)),
    Case("unknown optimizer", ["run", "mnist1d", *SMOKE, "--config.optimizer.name=adamm"], (2,), ("adamm",)),
    Case("no models", ["run", "mnist1d", *SMOKE, "--config.models=()"], (2,), ("models",)),
    Case("--seed-offset -1", ["run", "mnist1d", *SMOKE, "--seed-offset", "-1"], (2,), ("--seed-offset",)),
    Case("--seed-offset 2^31", ["run", "mnist1d", *SMOKE, "--seed-offset", "2147483648"], (2,), ("--seed-offset",)),
    Case("--checkpoint-every -5", ["run", "mnist1d", *SMOKE, "--checkpoint-every", "-5"], (2,),
         ("checkpoint",)),
    Case("two presets", ["run", "mnist1d", "--quick", "--smoke"], (2,), ("not allowed",)),
    Case("--shard 0/0", ["sweep", "mnist1d", "--sweep", "learning_rate", *SMOKE, "--shard", "0/0"], (2,),
         ("shard",)),
    Case("report on a missing root", ["report", "--root", "nowhere"], (2,), ("nowhere",)),
    Case("collect on a missing directory", ["collect", "nowhere"], (2,), ("nowhere",)),
    # roots that cannot be written
    Case("sweep --root read-only", ["sweep", "momentum", "--sweep", "dim", *SMOKE, "--root", "ro"], (2,), ("ro",),
         setup=_read_only_root, needs_non_root=True),
    Case("sweep --root a file", ["sweep", "momentum", "--sweep", "dim", *SMOKE, "--root", "afile"], (2,), ("afile",),
         setup=_file_root),
    Case("run --workdir a file", ["run", "momentum", *SMOKE, "--workdir", "afile"], (2,), ("afile",), setup=_file_root),
    # damaged result files
    Case("garbage config.json", ["run", "momentum", *SMOKE, "--workdir", "wd"], (2,), ("config.json",),
         setup=_damage_config),
    Case("cut claims.json", ["run", "momentum", *SMOKE, "--workdir", "wd"], (2,), ("claims.json",), setup=_cut_claims),
    Case("cut metrics.jsonl of a finished run", ["run", "perceptron_xor", *SMOKE, "--workdir", "wd"], (2,),
         ("metrics.jsonl",), setup=_cut_metrics),
    Case("report on a damaged claims.json", ["report", "--root", "."], (2,), ("claims.json",), setup=_cut_claims),
    # damaged MNIST-1D caches: set aside, rebuilt, with a warning naming the file
    Case("mnist1d cache truncated", ["run", "mnist1d", *SMOKE, "--workdir", "wd"], (0, 1), ("mnist1d_",),
         setup=_mnist1d_cache(_truncate)),
    Case("mnist1d cache empty", ["run", "mnist1d", *SMOKE, "--workdir", "wd"], (0, 1), ("mnist1d_",),
         setup=_mnist1d_cache(lambda p: p.write_bytes(b""))),
    Case("mnist1d cache bit flipped", ["run", "mnist1d", *SMOKE, "--workdir", "wd"], (0, 1), ("mnist1d_",),
         setup=_mnist1d_cache(_flip)),
    Case("mnist1d cache missing key", ["run", "mnist1d", *SMOKE, "--workdir", "wd"], (0, 1), ("mnist1d_",),
         setup=_mnist1d_cache(_missing_key)),
    Case("mnist1d cache NaN", ["run", "mnist1d", *SMOKE, "--workdir", "wd"], (0, 1), ("mnist1d_",),
         setup=_mnist1d_cache(_nan_values)),
    Case("mnist1d cache wrong shape", ["run", "mnist1d", *SMOKE, "--workdir", "wd"], (0, 1), ("mnist1d_",),
         setup=_mnist1d_cache(_reshape("x", lambda a: a[:, :-1]))),
    Case("mnist1d cache length mismatch", ["run", "mnist1d", *SMOKE, "--workdir", "wd"], (0, 1), ("mnist1d_",),
         setup=_mnist1d_cache(_reshape("y", lambda a: a[:-5]))),
    Case("mnist1d cache labels out of range", ["run", "mnist1d", *SMOKE, "--workdir", "wd"], (0, 1), ("mnist1d_",),
         setup=_mnist1d_cache(_reshape("y", lambda a: a + 10))),
    Case("mnist1d cache not a zip", ["run", "mnist1d", *SMOKE, "--workdir", "wd"], (0, 1), ("mnist1d_",),
         setup=_mnist1d_cache(lambda p: p.write_bytes(b"not a zip file at all"))),
    Case("photo cache truncated", ["run", "activations", *SMOKE, *PHOTOS, "--workdir", "wd"], (0, 1), ("photos_",),
         setup=_photo_cache_truncated),
    Case("compilation cache damaged", ["run", "mnist1d", *SMOKE, "--workdir", "wd"], (0, 1),
         ("damaged compilation cache",), setup=_compile_cache_damaged, check=_compile_cache_repaired),
    Case("damaged tfds dataset_info.json", ["run", "mnist1d", *SMOKE, "--workdir", "wd", "--config.data=mnist"], (2,),
         ("dataset_info.json", "damaged"), setup=_garbage_tfds_info, env={"TFDS_DATA_DIR": "tfds"}),
    # a partial re-run never shrinks a fuller report
    Case("reproduce --only keeps the others", ["reproduce", *SMOKE, "--only", "momentum", "--root", "r", "--jobs", "1",
                                               "--force"], (0, 1), (), setup=_smoke_root("momentum,perceptron_xor"),
         check=_keeps_both),
    Case("readme from a smaller report", ["readme", "--root", "r", "--readme", "README.md"], (2,), ("--force",),
         setup=_readme_setup, check=_readme_unchanged),
    # collect on hostile point files
    Case("collect: truncated claims", ["collect", "sw"], (0, 2), ("000-x",), setup=_hostile_sweep('{"experiment": "m')),
    Case("collect: HTML in a claim", ["collect", "sw"], (0, 2), (),
         setup=_hostile_sweep(json.dumps({"experiment": "<script>alert(1)</script>", "claims": "<b>x</b>"}))),
    Case("collect: deep nesting", ["collect", "sw"], (0, 2), (), setup=_hostile_sweep("[" * 100000 + "]" * 100000)),
    Case("collect: 5000-digit int", ["collect", "sw"], (0, 2), (),
         setup=_hostile_sweep('{"experiment": "m", "claims": [], "seconds": ' + "9" * 5000 + "}")),
    Case("collect on a file", ["collect", "afile"], (2,), ("not a directory",), setup=_file_root),
    Case("collect: claims not a list", ["collect", "sw"], (0, 2), ("000-x",),
         setup=_hostile_sweep('{"experiment": "m", "claims": 5}')),
    Case("collect: claims of strings", ["collect", "sw"], (0, 2), ("000-x",),
         setup=_hostile_sweep('{"experiment": "m", "claims": ["a", 1, null]}')),
    Case("collect: a top-level list", ["collect", "sw"], (0, 2), ("000-x",), setup=_hostile_sweep("[1, 2]")),
    Case("collect: empty file", ["collect", "sw"], (0, 2), ("000-x",), setup=_hostile_sweep("")),
    Case("collect: NaN and Infinity", ["collect", "sw"], (0, 2), (),
         setup=_hostile_sweep('{"experiment": "m", "claims": [{"id": "x", "verdict": "pass", "checks": '
                              '[{"name": "a", "mean": NaN, "ci": [-Infinity, Infinity]}]}]}')),
    Case("collect: bytes that are not UTF-8", ["collect", "sw"], (0, 2), ("000-x",),
         setup=_hostile_sweep(b'{"experiment": "\xff\xfe"}')),
    # issue 34: locks that cannot be turned, options and files that must be refused or repaired
    Case(".lock is a symlink", ["run", "mnist1d", *SMOKE, "--workdir", "wd"], (2,), (".lock", "symbolic link"),
         setup=_lock_symlink, check=_precious_kept),
    Case(".lock is a directory", ["run", "mnist1d", *SMOKE, "--workdir", "wd"], (2,), (".lock", "is a directory"),
         setup=_lock_dir),
    Case("reproduce --only ''", ["reproduce", *SMOKE, "--only", "", "--root", "r"], (2,), ("--only names no experiment",),
         check=_no_claims),
    Case("readme without markers", ["readme", "--root", "r", "--readme", "README.md", "--force"], (2,),
         ("results:begin",), setup=_readme_without_markers, check=_readme_unchanged),
    Case("100,000-character value", ["config", "mnist1d", *SMOKE, "--config.optimizer.name=" + "x" * 100_000], (2,),
         ("100,002 characters", "Valid optimizers")),
    Case("--shard -1/2", ["sweep", "mnist1d", "--sweep", "learning_rate", *SMOKE, "--shard", "-1/2", "--root", "s"],
         (2,), ("--shard must look like I/N",)),
    Case("HTML in a work directory's claims.json", ["report", "--root", "wd"], (0, 1), (), setup=_html_claims,
         check=_report_md_inert),
    Case("reused run without report.md", ["run", "momentum", *SMOKE, "--workdir", "wd"], (0, 1), (), setup=_report_md_gone,
         check=_report_md_back),
    Case("damaged combined claims.json, then --only", ["reproduce", *SMOKE, "--only", "momentum", "--root", "r",
                                                       "--jobs", "1"], (0, 1), ("damaged", "rebuilt"),
         setup=_combined_damaged, check=_keeps_both),
    # issue 34, round three: links that lead nowhere, warnings a setting hid, stray log lines
    Case("--workdir a symlink loop", ["run", "momentum", *SMOKE, "--workdir", "wd"], (2,),
         ("wd is a symbolic link that loops",), setup=_symlink_loop, forbid=("File exists",)),
    Case("--workdir a dangling symlink", ["run", "momentum", *SMOKE, "--workdir", "wd"], (2,),
         ("wd is a symbolic link to nowhere, which does not exist",), setup=_dangling_link, forbid=("File exists",)),
    Case("PYTHONWARNINGS=ignore, damaged cache", ["config", "mnist1d", *SMOKE], (0,),
         ("nnbasics: warning: the cached data file",), setup=_mnist1d_cache_cut, plain_env={"PYTHONWARNINGS": "ignore"}),
    Case("PYTHONWARNINGS=error, damaged cache", ["config", "mnist1d", *SMOKE], (0,),
         ("nnbasics: warning: the cached data file",), setup=_mnist1d_cache_cut, plain_env={"PYTHONWARNINGS": "error"},
         forbid=("Exception ignored",)),
    Case("damaged Orbax metadata on resume", ["run", "mnist1d", *SMOKE, "--config.models=('mlp',)", "--checkpoint-every",
                                              "100", "--workdir", "wd"], (0, 1), ("Orbax reported",),
         setup=_interrupted_with_damaged_orbax_metadata, forbid=("ERROR:absl",)),
    # files honour the umask
    Case("umask 022 modes", ["run", "momentum", *SMOKE, "--workdir", "wd"], (0, 1), (), check=_umask_check),
]


def concurrent_runs(d: pathlib.Path, env: dict[str, str], extra: tuple[str, ...] = ()) -> tuple[str, str]:
    """The same run twice at once: the second is refused naming the holder; every metrics row once."""
    cmd = [sys.executable, "-m", "nnbasics.cli", "--quiet", "run", "mnist1d", "--quick", "--workdir", "wd",
           "--config.models=('mlp',)", *extra]
    a = subprocess.Popen(cmd, cwd=d, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(6)
    b = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True)
    _, err_a = a.communicate()
    rows = [json.loads(x) for x in (d / "wd" / "metrics.jsonl").read_text().splitlines()]
    dup = len(rows) - len({json.dumps(r, sort_keys=True) for r in rows})
    ok = (b.returncode == 2 and "being written by pid" in b.stderr and dup == 0 and a.returncode in (0, 1)
          and "Traceback" not in b.stderr + err_a)
    return ("clean" if ok else "wrong"), f"first rc {a.returncode}, second rc {b.returncode}, {dup} duplicate rows"


def _until_rows(p: subprocess.Popen, metrics: pathlib.Path, n: int) -> None:
    while p.poll() is None and not (metrics.exists() and len(metrics.read_text().splitlines()) >= n):
        time.sleep(0.05)


def second_ctrl_c(d: pathlib.Path, env: dict[str, str]) -> tuple[str, str]:
    """Ctrl-C twice: the second stops at once with one line, status 130, no traceback; the same
    command then finishes."""
    cmd = [sys.executable, "-m", "nnbasics.cli", "run", "mnist1d", "--quick", "--workdir", "wd",
           "--config.models=('mlp',)"]
    p = subprocess.Popen(cmd, cwd=d, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _until_rows(p, d / "wd" / "metrics.jsonl", 1)
    p.send_signal(signal.SIGINT)
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate()
    again = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True)
    ok = p.returncode == 130 and "Traceback" not in err + again.stderr and again.returncode in (0, 1)
    return ("clean" if ok else "wrong"), f"rc {p.returncode}, then rc {again.returncode}: {err.strip()[-120:]}"


def resume_with_cut_metrics(d: pathlib.Path, env: dict[str, str]) -> tuple[str, str]:
    """A checkpointed run killed midway whose metrics.jsonl then loses all but two rows and a half
    (rows the checkpoint at step 1000 or later holds): the resumed run writes them again, with a
    warning naming the file, once each."""
    cmd = [sys.executable, "-m", "nnbasics.cli", "run", "mnist1d", "--quick", "--workdir", "wd",
           "--config.models=('mlp',)", "--checkpoint-every", "500"]
    m = d / "wd" / "metrics.jsonl"
    p = subprocess.Popen(cmd, cwd=d, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _until_rows(p, m, 6)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    lines = m.read_text().splitlines(keepends=True)
    m.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # rows 3+ gone, the 3rd torn
    again = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True)
    steps = [json.loads(x)["step"] for x in m.read_text().splitlines()]
    want = list(range(250, 6001, 250))  # the quick preset: 6000 steps, an evaluation every 250
    ok = again.returncode in (0, 1) and steps == want and "metrics.jsonl" in again.stderr
    ok = ok and "Traceback" not in again.stderr
    if not ok:
        print(again.stderr[-2000:], file=sys.stderr)
    return ("clean" if ok else "wrong"), (f"killed after {len(lines)} rows, resumed rc {again.returncode}, "
                                          f"{len(steps)} rows (want {len(want)}), steps in order: {steps == want}")


def sigterm_run(d: pathlib.Path, env: dict[str, str]) -> tuple[str, str]:
    """SIGTERM mid-training: a checkpoint, exit 143; the next run resumes and finishes."""
    cmd = [sys.executable, "-m", "nnbasics.cli", "run", "mnist1d", "--quick", "--workdir", "wd",
           "--config.models=('mlp',)"]
    p = subprocess.Popen(cmd, cwd=d, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    m = d / "wd" / "metrics.jsonl"
    while p.poll() is None and not (m.exists() and m.read_text().strip()):
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate()
    again = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True)
    ok = p.returncode == 143 and "checkpoint written" in err and again.returncode in (0, 1) and "Traceback" not in err
    return ("clean" if ok else "wrong"), f"rc {p.returncode}, resumed rc {again.returncode}"


_MARKS: dict[int, str] = {}  # pid -> the file its training loop touches when it listens


def _popen_listening(cmd: list[str], d: pathlib.Path, env: dict[str, str]) -> subprocess.Popen:
    """Popen `cmd` in `d` with `_listening`'s env, its mark registered for `_stop_when_training`."""
    mark = d / ".listening"
    if mark.exists():
        mark.unlink()
    p = subprocess.Popen(cmd, cwd=d, env=_listening(env, d), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    _MARKS[p.pid] = str(mark)
    return p


def _listening(env: dict[str, str], d: pathlib.Path) -> dict[str, str]:
    """`env` with NNBASICS_LISTENING_FILE: the command touches d/.listening when a training loop listens."""
    return {**env, "NNBASICS_LISTENING_FILE": str(d / ".listening")}


def _stop_when_training(p: subprocess.Popen, signum: int, ready: Callable[[], bool] = lambda: True) -> bool:
    """Send `signum` once the process trains (the command's handler is installed and a training loop listens:
    it touched the file `_listening` names) and `ready()`; False if it ended first."""
    mark = pathlib.Path(_MARKS.get(p.pid, ""))
    while p.poll() is None and not (interrupt.handles(p.pid) and mark.name and mark.exists() and ready()):
        time.sleep(0.005)
    if p.poll() is not None:
        return False
    p.send_signal(signum)
    return True


def _terminal_cmd(argv: list[str]) -> list[str]:
    """The command with SIGINT's default handler, as in a terminal (a background shell passes it on as ignored)."""
    start = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "sys.argv[0] = 'nnbasics'; runpy.run_module('nnbasics.cli', run_name='__main__')")
    return [sys.executable, "-c", start, *argv]


def stop_in_last_chunk(signum: int) -> Callable[[pathlib.Path, dict[str, str]], tuple[str, str]]:
    """SIGTERM or Ctrl-C while a run's only chunk (its last) compiles or trains: a checkpoint at its end and
    128 + the signal (the request was dropped and the run went on); the next run resumes and finishes."""
    def case(d: pathlib.Path, env: dict[str, str]) -> tuple[str, str]:
        cmd = _terminal_cmd(["run", "mnist1d", *SMOKE, "--config.models=('mlp',)", "--config.steps=300",
                             "--config.eval_every=300", "--workdir", "wd"])
        p = _popen_listening(cmd, d, env)
        sent = _stop_when_training(p, signum)
        _, err = p.communicate()
        again = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True)
        ok = (sent and p.returncode == 128 + signum and "interrupted at step 300 of 300" in err
              and "Traceback" not in err + again.stderr and again.returncode in (0, 1))
        return ("clean" if ok else "wrong"), f"rc {p.returncode}, resumed rc {again.returncode}: {err.strip()[-120:]}"
    return case


def sigterm_reproduce(d: pathlib.Path, env: dict[str, str]) -> tuple[str, str]:
    """SIGTERM to `reproduce` (one process) while its first experiment trains: it stops there, status 143,
    the message names what is kept; the later experiment does not start; the next run finishes both."""
    cmd = _terminal_cmd(["reproduce", *SMOKE, "--only", "mnist1d,capacity", "--root", "r", "--jobs", "1",
                         "--config.eval_every=200"])
    p = _popen_listening(cmd, d, env)
    sent = _stop_when_training(p, signal.SIGTERM)
    _, err = p.communicate()
    started = (d / "r" / "capacity-smoke").exists()
    again = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True)
    ok = (sent and p.returncode == 143 and "reproduce stopped at experiment 1 of 2" in err and not started
          and "Traceback" not in err + again.stderr and again.returncode in (0, 1))
    return ("clean" if ok else "wrong"), (f"rc {p.returncode}, the next experiment started: {started}, then rc "
                                          f"{again.returncode}: {err.strip()[-100:]}")


def ctrl_c_rows_in_order(d: pathlib.Path, env: dict[str, str]) -> tuple[str, str]:
    """Ctrl-C while the second model trains, checkpoints off, then the same command: the metrics rows in the
    order of an uninterrupted run (the first model, trained again, came after the second)."""
    argv = ["run", "mnist1d", *SMOKE, "--config.models=('mlp','cnn')", "--config.steps=400"]
    ref = subprocess.run(_terminal_cmd([*argv, "--workdir", "ref"]), cwd=d, env=env, capture_output=True, text=True)
    m = d / "wd" / "metrics.jsonl"

    def cnn_started() -> bool:
        return m.exists() and '"run": "cnn"' in m.read_text()

    p = _popen_listening(_terminal_cmd([*argv, "--workdir", "wd"]), d, env)
    sent = _stop_when_training(p, signal.SIGINT, cnn_started)
    _, err = p.communicate()
    again = subprocess.run(_terminal_cmd([*argv, "--workdir", "wd"]), cwd=d, env=env, capture_output=True, text=True)

    def order(wd: str) -> list[tuple[str, int]]:
        return [(r["run"], r["step"]) for r in map(json.loads, (d / wd / "metrics.jsonl").read_text().splitlines())]

    ok = (ref.returncode in (0, 1) and sent and p.returncode == 130 and again.returncode in (0, 1)
          and order("wd") == order("ref") and "Traceback" not in err + again.stderr)
    same = order("wd") == order("ref")
    return ("clean" if ok else "wrong"), f"rc {p.returncode}, then rc {again.returncode}, rows in order: {same}"


def classify(case: Case, out: subprocess.CompletedProcess, d: pathlib.Path) -> tuple[str, str]:
    text = out.stdout + out.stderr
    if "Traceback" in out.stderr:
        return "traceback", out.stderr.strip().splitlines()[-1][:150]
    if out.returncode not in case.rc:
        return "wrong", f"rc {out.returncode} (expected {case.rc}): {out.stderr.strip()[-150:]}"
    missing = [w for w in case.words if w not in text]
    if missing:
        return "wrong", f"rc {out.returncode}, message lacks {missing}: {out.stderr.strip()[-150:]}"
    stray = [w for w in case.forbid if w in text]
    if stray:
        return "wrong", f"rc {out.returncode}, the output has {stray}: {out.stderr.strip()[-150:]}"
    why = case.check(d) if case.check else None
    if why:
        return "wrong", why
    last = (out.stderr.strip().splitlines() or [""])[-1]
    return "clean", f"rc {out.returncode}: {last[:150]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="run the cases whose name contains this")
    ap.add_argument("--keep", default=None, help="keep the scratch directories under DIR")
    args = ap.parse_args()
    base = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="nnbasics-hostile-"))
    repo = str(pathlib.Path(__file__).resolve().parents[1])
    rows = []
    extra = [("concurrent run", concurrent_runs),
             ("concurrent run with checkpoints", lambda d, env: concurrent_runs(d, env, ("--checkpoint-every", "500"))),
             ("SIGTERM mid-run", sigterm_run), ("second Ctrl-C", second_ctrl_c),
             ("resume with a cut metrics.jsonl", resume_with_cut_metrics),
             ("SIGTERM in the last chunk", stop_in_last_chunk(signal.SIGTERM)),
             ("Ctrl-C in the last chunk", stop_in_last_chunk(signal.SIGINT)),
             ("SIGTERM to reproduce", sigterm_reproduce),
             ("Ctrl-C without checkpoints, rows in order", ctrl_c_rows_in_order)]
    for i, case in enumerate([*CASES, *extra]):
        name = case.name if isinstance(case, Case) else case[0]
        if args.only not in name:
            continue
        if isinstance(case, Case) and case.needs_non_root and hasattr(os, "geteuid") and os.geteuid() == 0:
            print(f"{'n/a':9s} {name}: skipped, running as root (permissions do not apply)", flush=True)
            continue
        d = base / f"{i:02d}"
        d.mkdir(parents=True, exist_ok=True)
        env = {**_scratch_env(d), "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
        old = os.umask(0o022)
        try:
            if isinstance(case, Case):
                if case.setup:
                    case.setup(d)
                argv = case.argv(d) if callable(case.argv) else case.argv
                env.update({k: str(d / v) for k, v in case.env.items()})
                env.update(case.plain_env)
                verdict, detail = classify(case, nnbasics(argv, d, env), d)
            else:
                verdict, detail = case[1](d, env)
        except Exception as e:  # noqa: BLE001 - a broken case is reported, the others go on
            verdict, detail = "wrong", f"the case itself failed: {type(e).__name__}: {e}"
        finally:
            os.umask(old)
            for p in d.rglob("*"):  # a read-only directory made by a case would block the cleanup
                if p.is_dir():
                    os.chmod(p, 0o755)
        rows.append((name, verdict, detail))
        print(f"{verdict:9s} {name}: {detail}", flush=True)
    counts = {v: sum(r[1] == v for r in rows) for v in ("clean", "traceback", "wrong")}
    print(f"\n{len(rows)} cases: {counts['clean']} clean, {counts['traceback']} traceback, {counts['wrong']} wrong")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if counts["clean"] == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
