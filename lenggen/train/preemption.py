"""SIGTERM and SIGINT as requests to stop cleanly: checkpoint the current step, then exit.

Cluster schedulers and cloud VMs announce a preemption with SIGTERM and kill the process a
grace period later; a person stops a run with Ctrl-C (SIGINT). The training loop asks
`Watch.requested()` once per step; when it answers True the loop saves the current step, waits
for the save to commit and raises `Preempted`. What a signal does depends on the phase it
arrives in:

- training (inside `Watch`: resume, steps, validation, saves): the flag is set; the loop
  finishes the step it is on, saves it, waits for the save to commit and raises `Preempted`.
- anywhere else (setup before training, the final evaluation): there is no state to save, so
  the handler raises `Interrupted` at once (like KeyboardInterrupt, but with the exit status).

Either way `lenggen.main` prints one line and exits with `exit_status(signal)`: 75 for SIGTERM
(run the same command to resume), 130 for SIGINT. Once a stop is under way, further signals are
logged and otherwise ignored, so a repeated SIGTERM cannot cut the save short or change the
status. SIGKILL (the scheduler's last word) cannot be caught; see lenggen/checkpoint.py for why
it never leaves a checkpoint that looks finished.

One process: the process-wide handler of `install` (or, for a library caller that did not
install it, a handler `Watch` sets while entered) sets the flag. Several processes
(jax.distributed): they must stop at the same step, yet SIGTERM may reach only some of them.
JAX's preemption service does this: `jax.distributed.initialize` installs its SIGTERM notifier
(a C++ handler, which a Python handler would replace, so `Watch` installs none for SIGTERM), a
notified process tells the coordination service, and in the background the processes agree on
a step: one past the furthest any of them has reported
(`multihost_utils.reached_preemption_sync_point`, a local check with no collective, which
Orbax's `reached_preemption` also uses). So no step waits on a cross-process exchange. The sync
point counts calls, so `Watch` numbers them itself (0 on entering, before the resume, so that a
notice during start-up still stops the first step). SIGINT, which JAX does not handle, keeps the
process-wide handler there; as one process cannot stop the others at a saved step, it is not
deferred during multi-process training: the process stops at once (status 130), its newest
checkpoint intact.
"""

import contextlib
import signal
import threading
import types

import jax
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
        super().__init__(
            message
            or f"{describe(signum)} before training started: nothing was "
            "saved. Run the same command to start again."
        )
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
    Call from the main thread (Python runs signal handlers there only), before
    `jax.distributed.initialize`: a multi-process run's SIGTERM then goes to JAX's notifier."""
    global _installed
    _installed = _Handler()
    for signum in SIGNALS:
        signal.signal(signum, _installed)


def stop_requested() -> int | None:
    """The signal received so far by the installed handler, if any."""
    return _installed.received if _installed is not None else None


class Watch:
    """While entered, SIGTERM and SIGINT ask training to stop at a step boundary instead of
    ending the process.

    A second signal still only asks again: the step in flight and the checkpoint save are
    what a stopped run must finish. Without `install` (e.g. a library caller), a single-process
    Watch sets its own handler for SIGTERM only while entered, and leaves SIGINT as Python's
    KeyboardInterrupt. With several processes no SIGTERM handler is set (JAX's notifier has it)
    and SIGINT is not deferred (module docstring).

    Args:
      process_count: processes of the run (default `jax.process_count()`).
      sync_point: JAX's `reached_preemption_sync_point` (tests pass a stand-in).
    """

    def __init__(
        self,
        *,
        process_count: int | None = None,
        sync_point=multihost_utils.reached_preemption_sync_point,
    ):
        self._multiprocess = (process_count or jax.process_count()) > 1
        self._sync_point = sync_point
        self._calls = 0
        self._handler = _installed
        self._own: _Handler | None = None
        self._previous = None
        self._deferred = False

    def __enter__(self) -> "Watch":
        if self._multiprocess:
            self._sync_point(self._calls)  # Call 0: a notice from now on stops call 1.
        elif self._handler is not None:
            self._handler.deferring += 1
            self._deferred = True
        elif threading.current_thread() is threading.main_thread():
            self._own = _Handler()
            self._own.deferring = 1
            self._previous = signal.signal(signal.SIGTERM, self._own)
        else:  # Python delivers signals to the main thread only; leave the default in place.
            logging.warning("Not in the main thread: SIGTERM will end training without a save.")
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if self._deferred:
            self._handler.deferring -= 1
            self._deferred = False
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
        if self._multiprocess and isinstance(exc, Interrupted):
            raise Interrupted(
                exc.signum,
                f"{describe(exc.signum)} during multi-process training: only a "
                "preemption notice (SIGTERM) stops every process at one saved step, so this "
                "process stopped at once; its newest complete checkpoint is intact. Run the "
                "same command to resume.",
            ) from None

    @property
    def signum(self) -> int | None:
        """The signal this process received, if any (with several processes, SIGTERM goes to
        JAX's notifier and is not seen here)."""
        handler = self._handler or self._own
        return handler.received if handler is not None else None

    def requested(self) -> bool:
        """True once a stop was asked for; with several processes, True on all of them at the
        same call (call it once per step on every process)."""
        if not self._multiprocess:
            return self.signum is not None
        self._calls += 1
        if self._sync_point(self._calls):
            logging.warning(
                "Preemption notice (SIGTERM to some process): every process stops after this step."
            )
            return True
        return False


@contextlib.contextmanager
def phase(message: str):
    """Re-words an `Interrupted` raised inside the block: `message` says what to do."""
    try:
        yield
    except Interrupted as stop:
        raise Interrupted(stop.signum, f"{describe(stop.signum)} {message}") from None
