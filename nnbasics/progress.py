"""Progress bars (tqdm) that show only on runs longer than a few seconds; `set_quiet(True)` hides them."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

_QUIET = False


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = bool(quiet)


def progress(total: int | None = None, desc: str | None = None, unit: str = "step", **kw) -> tqdm:
    """A tqdm bar that appears after 3 s (so quick runs stay silent) unless quiet."""
    return tqdm(total=total, desc=desc, unit=unit, disable=_QUIET, delay=3.0, file=sys.stderr,
                dynamic_ncols=True, leave=False, **kw)


def log(msg: str) -> None:
    """A line of progress text on stderr (suppressed when quiet)."""
    if not _QUIET:
        tqdm.write(msg, file=sys.stderr)
