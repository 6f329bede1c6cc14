"""Ctrl-C (SIGINT) during training: finish the chunk in flight, write a checkpoint, then stop.

A compiled chunk of training steps cannot be cut in the middle, and stopping between chunks
without saving would lose everything since the last checkpoint. `graceful_interrupt()` turns the
first SIGINT into a request that the training loop checks after each chunk; a second Ctrl-C
raises KeyboardInterrupt at once (the previous handler is back in place after the first).
Outside the main thread, or when someone else installed a SIGINT handler (a notebook kernel, a
test runner), nothing is changed.
"""

from __future__ import annotations

import contextlib
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

    def handler(signum, frame):  # noqa: ARG001
        flag.requested = True
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C stops at once
        print(f"\nnnbasics: interrupt received: {what} stops after the current chunk of steps and writes a "
              "checkpoint (Ctrl-C again to stop at once, without one)", file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, handler)
    flag.installed = True
    try:
        yield flag
    finally:
        if signal.getsignal(signal.SIGINT) is handler:
            signal.signal(signal.SIGINT, previous)
