"""SIGTERM and SIGINT as requests to stop cleanly: checkpoint the current step, then exit.

Cluster schedulers and cloud VMs announce a preemption with SIGTERM and kill the process a
grace period later; a person stops a run with Ctrl-C (SIGINT). Orbax's own preemption support
needs `jax.distributed`; a handler that only sets a flag, checked once per step, works in any
process. What a signal does depends on the phase it arrives in:

- training (inside `Watch`: resume, steps, validation, saves): the flag is set; the loop
  finishes the step it is on, saves it, waits for the save to commit and raises `Preempted`.
- anywhere else (setup before training, the final evaluation): there is no state to save, so
  the handler raises `Interrupted` at once (like KeyboardInterrupt, but with the exit status).

Either way `lenggen.main` prints one line and exits with `exit_status(signal)`: 75 for SIGTERM
(run the same command to resume), 130 for SIGINT. Once a stop is under way, further signals are
logged and otherwise ignored, so a repeated SIGTERM cannot cut the save short or change the
status. SIGKILL (the scheduler's last word) cannot be caught; see lenggen/checkpoint.py for why
it never leaves a checkpoint that looks finished.
"""

import contextlib
import signal
import threading
import types

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

# EX_TEMPFAIL of sysexits.h: a temporary failure, the command can be retried as it is.
EXIT_CODE = 75
# 128 + SIGINT, what a shell reports for a command stopped with Ctrl-C.
EXIT_CODE_INTERRUPTED = 130
SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_status(signum: int) -> int:
    return EXIT_CODE_INTERRUPTED if signum == signal.SIGINT else EXIT_CODE


def describe(signum: int) -> str:
    """'Preempted (SIGTERM)' or 'Interrupted (SIGINT)'."""
    name = signal.Signals(signum).name
    return f"{'Interrupted' if signum == signal.SIGINT else 'Preempted'} ({name})"


class Preempted(Exception):
    """Training stopped on a signal after checkpointing `step`."""

    def __init__(self, message: str, step: int, signum: int = signal.SIGTERM):
        super().__init__(message)
        self.step = step
        self.signum = signum


class Interrupted(BaseException):
    """A signal arrived outside training, where there is nothing to save.

    A BaseException, like KeyboardInterrupt, so that `except Exception` cleanups let it pass.
    """

    def __init__(self, signum: int, message: str | None = None):
        super().__init__(message or f"{describe(signum)} before training started: nothing was "
                         "saved. Run the same command to start again.")
        self.signum = signum


class _Handler:
    """The process's handler of SIGNALS: records the first signal; raises `Interrupted` for it
    unless a `Watch` defers it; ignores any later one."""

    def __init__(self):
        self.received: int | None = None
        self.deferring = 0

    def __call__(self, signum: int, frame: types.FrameType | None) -> None:
        del frame
        if self.received is not None:
            logging.warning("Received signal %d again: still stopping.", signum)
            return
        self.received = signum
        if self.deferring:
            logging.warning("Received signal %d: stopping after the current step.", signum)
            return
        raise Interrupted(signum)


# Signal handlers are process-wide by nature; `install` sets this once, in the main program.
_installed: _Handler | None = None


def install() -> None:
    """Handles SIGTERM and SIGINT as the module docstring says, for the rest of the process.
    Call from the main thread (Python runs signal handlers there only)."""
    global _installed
    _installed = _Handler()
    for signum in SIGNALS:
        signal.signal(signum, _installed)


def stop_requested() -> int | None:
    """The signal received so far by the installed handler, if any."""
    return _installed.received if _installed is not None else None


class Watch:
    """While entered, SIGTERM and SIGINT set a flag instead of ending the process.

    A second signal still only sets the flag: the step in flight and the checkpoint save are
    what a stopped run must finish. Without `install` (e.g. a library caller), the Watch sets
    its own handler for SIGTERM only while entered, and leaves SIGINT as Python's
    KeyboardInterrupt.
    """

    def __init__(self):
        self._handler = _installed
        self._own: _Handler | None = None
        self._previous = None

    def __enter__(self) -> "Watch":
        if self._handler is not None:
            self._handler.deferring += 1
        elif threading.current_thread() is threading.main_thread():
            self._own = _Handler()
            self._own.deferring = 1
            self._previous = signal.signal(signal.SIGTERM, self._own)
        else:  # Python delivers signals to the main thread only; leave the default in place.
            logging.warning("Not in the main thread: SIGTERM will end training without a save.")
        return self

    def __exit__(self, *exc_info) -> None:
        if self._handler is not None:
            self._handler.deferring -= 1
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    @property
    def signum(self) -> int | None:
        """The signal this process received, if any."""
        handler = self._handler or self._own
        return handler.received if handler is not None else None

    def requested(self) -> bool:
        """True once any process received the signal (all processes then stop at one step)."""
        received = self.signum is not None
        if jax.process_count() == 1:
            return received
        return bool(np.any(multihost_utils.process_allgather(np.asarray(received))))


@contextlib.contextmanager
def phase(message: str):
    """Re-words an `Interrupted` raised inside the block: `message` says what to do."""
    try:
        yield
    except Interrupted as stop:
        raise Interrupted(stop.signum, f"{describe(stop.signum)} {message}") from None
