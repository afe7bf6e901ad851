"""SIGTERM as a request to stop cleanly: finish the current step, checkpoint it, exit.

Cluster schedulers and cloud VMs announce a preemption with SIGTERM and kill the process a
grace period later. The training loop asks `Watch.requested()` once per step; when it answers
True the loop saves the current step, waits for the save to commit and raises `Preempted`;
`lenggen.main` exits with `EXIT_CODE`, and the same command resumes from that step.

One process: a Python handler sets a flag. Several processes (jax.distributed): they must stop
at the same step, yet SIGTERM may reach only some of them. JAX's preemption service does this:
`jax.distributed.initialize` installs its SIGTERM notifier (a C++ handler, which a Python
handler would replace, so none is installed), a notified process tells the coordination
service, and in the background the processes agree on a step: one past the furthest any of
them has reported (`multihost_utils.reached_preemption_sync_point`, a local check with no
collective, which Orbax's `reached_preemption` also uses). So no step waits on a cross-process
exchange. The sync point counts calls, so `Watch` numbers them itself (0 on entering, before
the resume, so that a notice during start-up still stops the first step).
"""

import signal
import threading
import types

import jax
from absl import logging
from jax.experimental import multihost_utils

# EX_TEMPFAIL of sysexits.h: a temporary failure, the command can be retried as it is.
EXIT_CODE = 75


class Preempted(Exception):
    """Training stopped on SIGTERM after checkpointing `step`."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class Watch:
    """While entered, SIGTERM asks training to stop at a step boundary instead of ending the
    process.

    A second SIGTERM still only asks again: the step in flight and the checkpoint save are
    what a preempted run must finish. SIGKILL (the scheduler's last word) cannot be caught;
    see lenggen/checkpoint.py for why it never leaves a checkpoint that looks finished.

    Args:
      signum: the signal of a single process (several processes: SIGTERM, JAX's notifier).
      process_count: processes of the run (default `jax.process_count()`).
      sync_point: JAX's `reached_preemption_sync_point` (tests pass a stand-in).
    """

    def __init__(self, signum: int = signal.SIGTERM, *, process_count: int | None = None,
                 sync_point=multihost_utils.reached_preemption_sync_point):
        self.signum = signum
        self._multiprocess = (process_count or jax.process_count()) > 1
        self._sync_point = sync_point
        self._calls = 0
        self._received = threading.Event()
        self._previous = None

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        del frame
        self._received.set()
        logging.warning("Received signal %d: stopping after the current step.", signum)

    def __enter__(self) -> "Watch":
        if self._multiprocess:
            self._sync_point(self._calls)  # Call 0: a notice from now on stops call 1.
        elif threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._handle)
        else:  # Python delivers signals to the main thread only; leave the default in place.
            logging.warning("Not in the main thread: SIGTERM will end training without a save.")
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def requested(self) -> bool:
        """True once a stop was asked for; with several processes, True on all of them at the
        same call (call it once per step on every process)."""
        if not self._multiprocess:
            return self._received.is_set()
        self._calls += 1
        if self._sync_point(self._calls):
            logging.warning("Preemption notice (SIGTERM to some process): every process stops "
                            "after this step.")
            return True
        return False
