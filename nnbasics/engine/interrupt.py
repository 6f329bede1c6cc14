"""Ctrl-C (SIGINT) during training: finish the chunk in flight, write a checkpoint, then stop.

A compiled chunk of training steps cannot be cut in the middle, and stopping between chunks
without saving would lose everything since the last checkpoint. `graceful_interrupt()` turns the
first SIGINT into a request that the training loop checks after each chunk. A second Ctrl-C
stops the process at once with one line on stderr and exit status 130, even while a compiled
chunk runs (a thread woken by the signal's wakeup fd exits, so no KeyboardInterrupt surfaces in
random places as a traceback): what was written stays (metric lines are flushed one by one,
results and checkpoints are renamed into place only when complete, a torn checkpoint is detected
and skipped on resume), and the run continues from the last complete checkpoint next time.
Outside the main thread, or when someone else installed a SIGINT handler (a notebook kernel, a
test runner), nothing is changed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT after writing a checkpoint at `step` (under `directory`)."""

    def __init__(self, message: str, step: int, directory: str | None):
        super().__init__(message)
        self.step, self.directory = step, directory


class InterruptFlag:
    """Whether SIGINT arrived since the flag was armed."""

    def __init__(self) -> None:
        self.requested = False
        self.installed = False


@contextlib.contextmanager
def graceful_interrupt(what: str = "training") -> Iterator[InterruptFlag]:
    flag = InterruptFlag()
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    if not main or previous is not signal.default_int_handler:
        yield flag
        return

    wakeup: list[tuple[int, int]] = []  # (the previous wakeup fd, ours) once the first Ctrl-C armed ours

    def handler(signum, frame):  # noqa: ARG001
        if flag.requested:  # the second Ctrl-C, if the main thread got here before the watcher thread
            abort_now(what)
        flag.requested = True
        wakeup.append(_arm_second_interrupt(what))
        print(f"\nnnbasics: interrupt received: {what} stops after the current chunk of steps and writes a "
              "checkpoint (Ctrl-C again to stop at once, without one)", file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, handler)
    flag.installed = True
    try:
        yield flag
    finally:
        if wakeup:
            signal.set_wakeup_fd(wakeup[0][0])
            os.close(wakeup[0][1])  # the watcher thread reads EOF and ends
        if signal.getsignal(signal.SIGINT) is handler:
            signal.signal(signal.SIGINT, previous)


_ABORTING = threading.Lock()


def abort_now(what: str = "training") -> None:
    """The second Ctrl-C: one line, then exit 130 without unwinding (no traceback, no half-run cleanup)."""
    if not _ABORTING.acquire(blocking=False):  # the watcher thread and the main thread both saw it
        threading.Event().wait()
    try:
        sys.stdout.flush()
        print(f"\nnnbasics: second interrupt: {what} stopped at once, without a new checkpoint. Run the same "
              "command again to continue from the last complete one.", file=sys.stderr, flush=True)
    finally:
        os._exit(130)


def _arm_second_interrupt(what: str) -> tuple[int, int]:
    """Route the next SIGINT's wakeup byte to a thread that calls `abort_now` (the C-level signal
    handler writes it at once, while the main thread may be busy in a compiled chunk for minutes).
    Returns the previous wakeup fd and ours (closing ours ends the thread)."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)

    def watch() -> None:
        while True:
            data = os.read(r, 64)
            if not data or signal.SIGINT in data:
                break
        os.close(r)
        if data:
            abort_now(what)

    threading.Thread(target=watch, name="nnbasics-second-interrupt", daemon=True).start()
    return previous, w
