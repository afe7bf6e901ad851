"""Checks, at start-up, that every process of a multi-process run sees the same workdir.

Orbax saves a multi-host checkpoint into one directory that every host must see (a bucket, or
a shared file system). With a separate disk per host (same path, different directories) no
checkpoint ever commits and every process waits in Orbax's barriers until killed. Instead:
process 0 writes WORKDIR/.shared-<nonce> (the nonce is broadcast through JAX's collectives,
which work whatever the disks), every process looks for that file until `deadline_s`, and all
of them then compare notes (an allgather). If any process did not see it, every process raises
the same one-line error. While waiting, SIGTERM and SIGINT stop the wait at once (jax.distributed
installs its own SIGTERM handler that only records the signal, so without this a process would
wait out the deadline).
"""

import contextlib
import signal
import time
import uuid

import jax
import numpy as np
from jax.experimental import multihost_utils

from lenggen.rundir import storage

TOKEN_PREFIX = ".shared-"


class NotSharedError(storage.StorageError):
    """The processes of one run do not see the same workdir."""


class Interrupted(Exception):
    """SIGTERM or SIGINT arrived while waiting."""

    def __init__(self, signum: int):
        super().__init__(f"Stopped by {signal.Signals(signum).name} while checking that every "
                         "process sees the workdir; nothing was written but the check's token.")
        self.signum = signum


@contextlib.contextmanager
def _signals_interrupt():
    """SIGTERM/SIGINT raise Interrupted in the main thread while the block runs."""
    def handler(signum, frame):
        del frame
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _nonce() -> str:
    """A random token chosen by process 0, the same on every process."""
    mine = np.frombuffer(uuid.uuid4().bytes, dtype=np.uint8)
    return bytes(np.asarray(multihost_utils.broadcast_one_to_all(mine))).hex()


def check(workdir: str, *, deadline_s: float = 60.0, poll_s: float = 0.5) -> None:
    """Raises NotSharedError, on every process, unless all see process 0's token in time.

    Does nothing in a single-process run.
    """
    if jax.process_count() == 1:
        return
    with _signals_interrupt():
        token = storage.resolve(workdir) / f"{TOKEN_PREFIX}{_nonce()}"
        if jax.process_index() == 0:
            storage.write_bytes(token, b"")
        start = time.monotonic()
        seen = storage.exists(token)
        while not seen and time.monotonic() - start < deadline_s:
            time.sleep(poll_s)
            seen = storage.exists(token)
        everyone = np.asarray(multihost_utils.process_allgather(np.asarray(seen)))
        if jax.process_index() == 0:
            token.unlink(missing_ok=True)
    blind = [int(i) for i in np.flatnonzero(~everyone.astype(bool))]
    if blind:
        raise NotSharedError(
            f"Process(es) {blind} of {jax.process_count()} cannot see {token.parent} as process "
            f"0 wrote it (no {token.name} after {deadline_s:.0f} s): every process needs the same "
            "workdir, e.g. a gs:// bucket or a shared file system, not a per-host disk."
        )
