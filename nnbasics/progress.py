"""Progress: tqdm bars on a terminal that show only on runs longer than a few seconds; plain lines
when the output is a file, a pipe or a notebook's captured stream; `set_quiet(True)` hides both."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator

from tqdm.auto import tqdm

_QUIET = False
PLAIN_EVERY = 30.0  # seconds between the plain progress lines of one bar (and one at the end)


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = bool(quiet)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or file-like stream without a terminal
        return False


class PlainProgress:
    """A progress counter that writes whole lines ('resnet20: 500/2000 steps (25%), 41 s'): one after
    the first `delay` seconds at most every `every` seconds, and one when a bar that showed is closed."""

    def __init__(self, total: int | None, desc: str | None, unit: str, delay: float = 3.0,
                 every: float = PLAIN_EVERY, stream=None):
        self.total, self.desc, self.unit, self.n = total, desc or "progress", unit, 0
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.next_at, self.every, self.shown = self.start + delay, every, False

    def _line(self) -> str:
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        return f"{self.desc}: {self.n}{of} {self.unit}s{pct}, {time.monotonic() - self.start:.0f} s"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now >= self.next_at:
            print(self._line(), file=self.stream, flush=True)
            self.shown, self.next_at = True, now + self.every

    def close(self) -> None:
        if self.shown:
            print(self._line(), file=self.stream, flush=True)
            self.shown = False


def progress(total: int | None = None, desc: str | None = None, unit: str = "step", **kw):
    """A tqdm bar that appears after 3 s (so quick runs stay silent) unless quiet; plain lines instead
    when stderr is not a terminal (no carriage returns in a log file)."""
    if not _QUIET and not _is_terminal(sys.stderr):
        return PlainProgress(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, disable=_QUIET, delay=3.0, file=sys.stderr,
                dynamic_ncols=True, leave=False, **kw)


@contextlib.contextmanager
def quieted(on: bool = True) -> Iterator[None]:
    """Within the block (when `on`), no progress bars or log lines; the setting before is restored."""
    global _QUIET
    before = _QUIET
    _QUIET = before or bool(on)
    try:
        yield
    finally:
        _QUIET = before


def log(msg: str) -> None:
    """A line of progress text on stderr (suppressed when quiet)."""
    if not _QUIET:
        tqdm.write(msg, file=sys.stderr)
