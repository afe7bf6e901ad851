"""Checks, at start-up, that every process of a multi-process run sees the same workdir.

Orbax saves a multi-host checkpoint into one directory that every host must see (a bucket, or
a shared file system). With a separate disk per host (same path, different directories) no
checkpoint ever commits and every process waits in Orbax's barriers until killed. Instead:

  1. process 0 picks a random nonce and broadcasts it (JAX's collectives work whatever the
     disks);
  2. process 0 writes WORKDIR/.shared-<nonce>; every other process waits for it, then writes
     WORKDIR/.shared-<nonce>.seen-<its index>;
  3. process 0 waits for every `.seen-` file, then deletes them all.

A process that does not see what it waits for within the deadline raises NotSharedError (one
line naming the workdir and the processes concerned): the other processes within
`deadline_s`, process 0 within twice that (the others may start waiting later). All waits are
Python sleeps, so SIGTERM and SIGINT stop them at once (raising Interrupted) on every process;
jax.distributed's own SIGTERM handler only records the signal, which is why processes blocked
in Orbax ignored it. The deadline is `deadline_s`, else $LENGGEN_SHARED_CHECK_S, else 60 s.
"""

import contextlib
import ctypes
import os
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
        super().__init__(
            f"Stopped by {signal.Signals(signum).name} while checking that every "
            "process sees the workdir; nothing was written but the check's files."
        )
        self.signum = signum


def _raw_actions(signums) -> dict:
    """The C-level sigaction of each signal, as bytes (empty where libc cannot be asked).

    Python's `signal.signal` returns only what Python installed: the SIGTERM notifier that
    `jax.distributed.initialize` installs in C++ reads as SIG_DFL (or as the handler Python had
    before), and restoring that would silently remove it, so a multi-process run preempted later
    would die instead of stopping at a saved step (lenggen/train/preemption.py).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return {}
    saved = {}
    for signum in signums:
        buffer = ctypes.create_string_buffer(1024)  # >= sizeof(struct sigaction)
        if libc.sigaction(int(signum), None, buffer) == 0:
            saved[signum] = (libc, buffer)
    return saved


@contextlib.contextmanager
def _signals_interrupt():
    """SIGTERM/SIGINT raise Interrupted in the main thread while the block runs; afterwards
    each signal's handler is exactly what it was, C-level handlers (JAX's) included."""

    def handler(signum, frame):
        del frame
        raise Interrupted(signum)

    signums = (signal.SIGTERM, signal.SIGINT)
    raw = _raw_actions(signums)
    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for signum, old in previous.items():
            # None: the old handler was not installed from Python and cannot be restored.
            signal.signal(signum, signal.SIG_DFL if old is None else old)
            if signum in raw:
                libc, buffer = raw[signum]
                libc.sigaction(int(signum), buffer, None)


def _nonce() -> str:
    """A random token chosen by process 0, the same on every process."""
    mine = np.frombuffer(uuid.uuid4().bytes, dtype=np.uint8)
    return bytes(np.asarray(multihost_utils.broadcast_one_to_all(mine))).hex()


def _wait_for(paths: list, deadline_s: float, poll_s: float) -> list:
    """Polls until every path exists or `deadline_s` passes; returns those still missing."""
    start = time.monotonic()
    missing = list(paths)
    while True:
        missing = [path for path in missing if not storage.exists(path)]
        if not missing or time.monotonic() - start >= deadline_s:
            return missing
        time.sleep(poll_s)


def check(workdir: str, *, deadline_s: float | None = None, poll_s: float = 0.5) -> None:
    """Raises NotSharedError unless this process and process 0 see the same `workdir`.

    Does nothing in a single-process run.
    """
    if jax.process_count() == 1:
        return
    if deadline_s is None:
        deadline_s = float(os.environ.get("LENGGEN_SHARED_CHECK_S", 60))
    index, count = jax.process_index(), jax.process_count()
    root = storage.resolve(workdir)
    with _signals_interrupt():
        token = root / f"{TOKEN_PREFIX}{_nonce()}"
        if index == 0:
            storage.write_bytes(token, b"")
            seen = [root / f"{token.name}.seen-{i}" for i in range(1, count)]
            missing = _wait_for(seen, 2 * deadline_s, poll_s)
            for path in [token, *seen]:
                path.unlink(missing_ok=True)
            if missing:
                blind = [int(path.name.rsplit("-", 1)[1]) for path in missing]
                raise NotSharedError(
                    f"Process(es) {blind} of {count} did not confirm seeing {root} as process 0 "
                    f"does (no {token.name}.seen-<process> after {2 * deadline_s:.0f} s): every "
                    "process needs the same workdir, e.g. a gs:// bucket or a shared file "
                    "system, not a per-host disk."
                )
        else:
            if _wait_for([token], deadline_s, poll_s):
                raise NotSharedError(
                    f"Process {index} of {count} cannot see {root} as process 0 does (no "
                    f"{token.name} after {deadline_s:.0f} s): every process needs the same "
                    "workdir, e.g. a gs:// bucket or a shared file system, not a per-host disk."
                )
            storage.write_bytes(root / f"{token.name}.seen-{index}", b"")
