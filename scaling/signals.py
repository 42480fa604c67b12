"""Signals during a search: Ctrl+C and SIGTERM interrupt a trial's training at once and wait
anywhere else (storage calls, bookkeeping) for the next safe point, so no write is cut in
half; and a logging filter, so that a trial such a stop (or a full disk) ended is told in
the command's one line, not by Optuna with its whole traceback.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys

from .faults import NoSpace


class _QuietStops(logging.Filter):
    """Optuna logs a trial that a signal or a full disk stopped as a failure with its whole
    traceback (and then its value); the command says what happened in one line instead."""

    def __init__(self):
        super().__init__()
        self.quiet: set[int] = set()  # trial numbers whose failure is told by us

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if not msg.startswith("Trial "):
            return True
        number = msg.split()[1]
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (KeyboardInterrupt, NoSpace)):
            self.quiet.add(number)
            return False
        return not (number in self.quiet and "failed with value" in msg)


logging.getLogger("optuna.study._optimize").addFilter(_QuietStops())


class Interrupted(KeyboardInterrupt):
    """Ctrl+C or SIGTERM, raised where it is safe: inside training, or between trials."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM


_signals = {"window": False, "pending": None}


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM interrupt a running training at once; elsewhere (storage calls,
    bookkeeping) they wait for the next safe point, so no write is cut in half."""

    def handler(signum, frame):
        _signals["pending"] = signum
        if _signals["window"]:
            raise Interrupted(signum)

    def unraisable(info, default=sys.unraisablehook):
        # The signal landed inside a finalizer (a weakref callback of SQLAlchemy's, say),
        # where Python prints the exception and drops it: it stays pending, and the next
        # safe point (the epoch's report, the next trial) raises it.
        if isinstance(info.exc_value, Interrupted):
            return
        default(info)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    if getattr(sys.unraisablehook, "__name__", "") != "unraisable":
        sys.unraisablehook = unraisable


def check_signals() -> None:
    if _signals["pending"] is not None:
        raise Interrupted(_signals["pending"])


@contextlib.contextmanager
def interruptible():
    """The window in which a signal interrupts at once."""
    check_signals()
    _signals["window"] = True
    try:
        yield
    finally:
        _signals["window"] = False


@contextlib.contextmanager
def shielded():
    """A storage write inside the training window: a signal waits until it is done."""
    was = _signals["window"]
    _signals["window"] = False
    try:
        yield
    finally:
        _signals["window"] = was
    if was:
        check_signals()
