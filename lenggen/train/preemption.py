"""SIGTERM as a request to stop cleanly: finish the current step, checkpoint it, exit.

Cluster schedulers and cloud VMs announce a preemption with SIGTERM and kill the process a
grace period later. Orbax's own preemption support needs `jax.distributed`; a handler that only
sets a flag, checked once per step, works in any process. The training loop then saves the
current step, waits for the save to commit and raises `Preempted`; `lenggen.main` exits with
`EXIT_CODE`, and the same command resumes from that step.
"""

import signal
import threading
import types

import jax
import numpy as np
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
    """While entered, SIGTERM sets a flag instead of ending the process.

    A second SIGTERM still only sets the flag: the step in flight and the checkpoint save are
    what a preempted run must finish. SIGKILL (the scheduler's last word) cannot be caught;
    see lenggen/checkpoint.py for why it never leaves a checkpoint that looks finished.
    """

    def __init__(self, signum: int = signal.SIGTERM):
        self.signum = signum
        self._received = threading.Event()
        self._previous = None

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        del frame
        self._received.set()
        logging.warning("Received signal %d: stopping after the current step.", signum)

    def __enter__(self) -> "Watch":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._handle)
        else:  # Python delivers signals to the main thread only; leave the default in place.
            logging.warning("Not in the main thread: SIGTERM will end training without a save.")
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def requested(self) -> bool:
        """True once any process received the signal (all processes then stop at one step)."""
        received = self._received.is_set()
        if jax.process_count() == 1:
            return received
        return bool(np.any(multihost_utils.process_allgather(np.asarray(received))))
