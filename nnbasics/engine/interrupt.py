"""Ctrl-C (SIGINT) or SIGTERM during training: finish the chunk in flight, write a checkpoint, then stop.

A compiled chunk of training steps cannot be cut in the middle, and stopping between chunks
without saving would lose everything since the last checkpoint. `graceful_interrupt()` turns the
first SIGINT into a request that the training loop checks after each chunk. A second Ctrl-C
stops the process at once with one line on stderr and exit status 130, even while a compiled
chunk runs (a thread woken by the signal's wakeup fd exits, so no KeyboardInterrupt surfaces in
random places as a traceback): what was written stays (metric lines are flushed one by one,
results and checkpoints are renamed into place only when complete, a torn checkpoint is detected
and skipped on resume), and the run continues from the last complete checkpoint next time.
SIGTERM (what `kill`, a batch scheduler's preemption or `timeout` send) is handled the same way:
checkpoint after the chunk, exit status 143; a second SIGTERM stops at once. Outside the main
thread, or for a signal someone else installed a handler for (a notebook kernel, a test runner),
nothing is changed.

The command line installs the handler (`nnbasics run`, `sweep`, `reproduce` and its workers), not
the library: `fit` only listens to the active flag (`listening`) while it trains with a place for the
checkpoint. A stop signal while nothing listens (loading, analysis, a fit without a checkpoint
directory) stops at once, as without the handler: KeyboardInterrupt (SIGINT) or
TrainingInterrupted without a checkpoint (SIGTERM). In a script of your own:

    with graceful_interrupt():
        fit(model, data, config, checkpoint_dir="ckpt")
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator

# the stop signals and the disposition they have when nobody else handles them
_DEFAULTS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT or SIGTERM (`signum`) after writing a checkpoint at `step` (under
    `directory`); the process should exit with 128 + signum."""

    def __init__(self, message: str, step: int, directory: str | None, signum: int = signal.SIGINT):
        super().__init__(message)
        self.step, self.directory, self.signum = step, directory, int(signum)


class InterruptFlag:
    """Whether a stop signal (SIGINT, SIGTERM) arrived since the flag was armed, and which."""

    def __init__(self) -> None:
        self.requested = False
        self.installed = False
        self.signum = int(signal.SIGINT)
        self.listening = 0  # training loops checking this flag now (a signal while none does stops at once)


_ACTIVE: list[InterruptFlag] = []  # the flags of the installed handlers, innermost last


def handles(pid: int, signum: int = signal.SIGTERM) -> bool:
    """Whether process `pid` has a handler installed for `signum` (Linux: the SigCgt mask of
    /proc/PID/status); False where that cannot be read. For tests and scripts that signal a command
    only once it listens."""
    try:
        with open(f"/proc/{pid}/status") as f:
            caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    except (OSError, StopIteration, ValueError):
        return False
    return bool(caught & (1 << (int(signum) - 1)))


def active() -> InterruptFlag | None:
    """The flag of the innermost installed `graceful_interrupt`, or None (no handler: a notebook, a
    library call outside the command line)."""
    return _ACTIVE[-1] if _ACTIVE else None


@contextlib.contextmanager
def listening(flag: InterruptFlag | None) -> Iterator[None]:
    """A training loop checks `flag` after each chunk while in this block (None: nothing listens)."""
    if flag is None:
        yield
        return
    flag.listening += 1
    mark = os.environ.get("NNBASICS_LISTENING_FILE")  # for tests and wrappers: touched when a loop listens
    if mark and flag.installed:
        with open(mark, "a"):
            pass
    try:
        yield
    finally:
        flag.listening -= 1


@contextlib.contextmanager
def graceful_interrupt(what: str = "training") -> Iterator[InterruptFlag]:
    flag = InterruptFlag()
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.getsignal(s) for s in _DEFAULTS} if main else {}
    ours = [s for s, p in previous.items() if p is _DEFAULTS[s]]
    if not ours:
        yield flag
        return

    wakeup: list[tuple[int, int]] = []  # (the previous wakeup fd, ours) once the first signal armed ours

    def handler(signum, frame):  # noqa: ARG001
        if not flag.listening and not flag.requested:  # no training loop would check the request: stop now
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise TrainingInterrupted(f"{signal_name(signum)} received outside a training loop; finished results "
                                      "are kept, run the same command again to continue", 0, None, signum)
        if flag.requested:  # the second signal, if the main thread got here before the watcher thread
            abort_now(what, signum)
        flag.requested, flag.signum = True, int(signum)
        wakeup.append(_arm_second_interrupt(what, ours))
        again = "Ctrl-C" if signum == signal.SIGINT else signal_name(signum)
        print(f"\nnnbasics: {signal_name(signum)} received: {what} stops after the current chunk of steps and "
              f"writes a checkpoint ({again} again to stop at once, without one)", file=sys.stderr, flush=True)

    for s in ours:
        signal.signal(s, handler)
    flag.installed = True
    _ACTIVE.append(flag)
    try:
        yield flag
    finally:
        _ACTIVE.remove(flag)
        if wakeup:
            signal.set_wakeup_fd(wakeup[0][0])
            os.close(wakeup[0][1])  # the watcher thread reads EOF and ends
        for s in ours:
            if signal.getsignal(s) is handler:
                signal.signal(s, previous[s])


_ABORTING = threading.Lock()


def abort_now(what: str = "training", signum: int = signal.SIGINT) -> None:
    """The second Ctrl-C (or SIGTERM): one line, then exit 128 + signum (130, 143) without unwinding (no
    traceback, no half-run cleanup)."""
    if not _ABORTING.acquire(blocking=False):  # the watcher thread and the main thread both saw it
        threading.Event().wait()
    try:
        sys.stdout.flush()
        print(f"\nnnbasics: second {signal_name(signum)}: {what} stopped at once, without a new checkpoint. Run the same "
              "command again to continue from the last complete one.", file=sys.stderr, flush=True)
    finally:
        os._exit(128 + int(signum))


def _arm_second_interrupt(what: str, signums: list[int]) -> tuple[int, int]:
    """Route the next stop signal's wakeup byte to a thread that calls `abort_now` (the C-level signal
    handler writes it at once, while the main thread may be busy in a compiled chunk for minutes).
    Returns the previous wakeup fd and ours (closing ours ends the thread)."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)

    def watch() -> None:
        while True:
            data = os.read(r, 64)
            hit = [b for b in data if b in signums]
            if not data or hit:
                break
        os.close(r)
        if data:
            abort_now(what, hit[0])

    threading.Thread(target=watch, name="nnbasics-second-interrupt", daemon=True).start()
    return previous, w
