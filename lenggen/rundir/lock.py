"""An exclusive lock on a run directory, on a local disk or on GCS.

WORKDIR/lock.json names the holder: {"host", "pid", "started"}. Two runs in one workdir would
interleave metrics.jsonl and fight inside Orbax, so the second is refused with one line that
names the first.

- Local disk: flock(2) on lock.json (per open file, so even a second lock in the same process
  is refused; Linux maps it to a POSIX lock on NFS, which other hosts see). The kernel drops it
  when the holder exits in any way, kill -9 included, so a lock left by a killed run is free at
  once. Release deletes the file while still holding it; a run that had opened the old file
  notices (the inode differs) and opens the new one.
- GCS: the lock is the object's existence, changed only by uploads with a generation
  precondition: take = create with ifGenerationMatch=0 (exactly one of two racing runs
  succeeds); a daemon thread refreshes it every `heartbeat_s` with ifGenerationMatch=<own
  generation>; release deletes it. A lock is stale when its holder ran on this host and that
  process is gone, or when it has not been refreshed for `stale_after_s` (the object's update
  time, GCS's clock, against this host's; clocks on Cloud VMs are NTP-synced). A stale lock is
  taken over with ifGenerationMatch=<the stale generation>, so of two runs recovering it at
  once, one wins.
"""

import contextlib
import datetime
import fcntl
import json
import os
import socket
import threading
from typing import Any

from absl import logging

from lenggen.rundir import storage

LOCK_FILE = "lock.json"


class WorkdirLockedError(ValueError):
    """Another run holds the workdir."""


def _holder() -> dict[str, Any]:
    return dict(
        host=socket.gethostname(),
        pid=os.getpid(),
        started=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )


def _describe(holder: Any) -> str:
    if not isinstance(holder, dict):
        return "an unknown holder"
    return f"pid {holder.get('pid')} on {holder.get('host')} (since {holder.get('started')})"


def _refusal(path: str, holder: Any) -> WorkdirLockedError:
    return WorkdirLockedError(
        f"Workdir {os.path.dirname(path)} is in use by {_describe(holder)} ({path}); wait for "
        "that run to end, or stop it, then run this command again."
    )


def _alive_here(holder: Any) -> bool:
    """False only when `holder` ran on this host and its process is gone."""
    if not isinstance(holder, dict) or holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, KeyError, TypeError):
        return True
    return True


class WorkdirLock:
    """Held from `acquire()` to `release()` (or use as a context manager).

    Attributes:
      path: the lock file (WORKDIR/lock.json).
      recovered: the holder of a stale lock this one replaced, or None.
      lost: set on GCS when the heartbeat found the lock taken over by another run.
    """

    def __init__(self, workdir: str, *, heartbeat_s: float = 60.0, stale_after_s: float = 300.0):
        self.path = os.fspath(storage.resolve(workdir) / LOCK_FILE)
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.recovered: Any = None
        self.lost = threading.Event()
        self._descriptor: int | None = None
        self._generation: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "WorkdirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Takes the lock or raises WorkdirLockedError naming its holder."""
        if storage.is_gcs(self.path):
            self._acquire_gcs()
        else:
            self._acquire_local()

    def release(self) -> None:
        if self._descriptor is not None:
            # Removed while still locked: a run that opened the old file finds it unlinked
            # when it gets the lock, and starts again (`_acquire_local`).
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)
            os.close(self._descriptor)
            self._descriptor = None
        if self._generation is not None:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            if not self.lost.is_set():
                filesystem = storage.gcs_filesystem()
                bucket, key = storage.bucket_and_key(self.path)
                try:
                    filesystem.call(
                        "DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=self._generation
                    )
                except (FileNotFoundError, FileExistsError):
                    pass  # Already gone, or taken over: not ours to delete.
                filesystem.invalidate_cache(self.path)
            self._generation = None

    # ---- Local disk.

    def _acquire_local(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        while True:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                text = os.pread(descriptor, 65536, 0).decode(errors="replace")
                os.close(descriptor)
                raise _refusal(self.path, _parse(text)) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(descriptor).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(descriptor)  # Locked a file its holder unlinked on release: retry.
        text = os.pread(descriptor, 65536, 0).decode(errors="replace")
        if text.strip():
            # The kernel freed a lock whose holder died; its record is still in the file.
            self.recovered = _parse(text)
        payload = json.dumps(_holder()).encode()
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, payload, 0)
        os.fsync(descriptor)
        self._descriptor = descriptor

    # ---- GCS.

    def _upload(self, payload: bytes, if_generation_match: str) -> str:
        """One multipart upload with a generation precondition; returns the new generation.

        Raises FileExistsError when the precondition fails (HTTP 412).
        """
        filesystem = storage.gcs_filesystem()
        bucket, key = storage.bucket_and_key(self.path)
        boundary = "lenggen-lock-boundary"
        body = (
            (
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
                f"{json.dumps({'name': key})}\r\n--{boundary}\r\n"
                "Content-Type: application/json\r\n\r\n"
            ).encode()
            + payload
            + f"\r\n--{boundary}--".encode()
        )
        result = filesystem.call(
            "POST",
            f"{filesystem._location}/upload/storage/v1/b/{bucket}/o",
            uploadType="multipart",
            ifGenerationMatch=if_generation_match,
            headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
            data=body,
            json_out=True,
        )
        filesystem.invalidate_cache(self.path)
        return str(result["generation"])

    def _read_gcs(self) -> tuple[Any, str, float] | None:
        """(holder, generation, seconds since its last refresh), or None if there is no lock."""
        filesystem = storage.gcs_filesystem()
        bucket, key = storage.bucket_and_key(self.path)
        try:
            metadata = filesystem.call("GET", "b/{}/o/{}", bucket, key, json_out=True)
            _, content = filesystem.call(
                "GET", "b/{}/o/{}", bucket, key, alt="media", generation=metadata["generation"]
            )
        except FileNotFoundError:
            return None
        updated = datetime.datetime.fromisoformat(metadata["updated"].replace("Z", "+00:00"))
        age = (datetime.datetime.now(datetime.UTC) - updated).total_seconds()
        return _parse(content.decode(errors="replace")), str(metadata["generation"]), age

    def _acquire_gcs(self) -> None:
        payload = json.dumps(_holder()).encode()
        for _ in range(3):  # A lock released or recovered between our calls: try again.
            try:
                self._generation = self._upload(payload, "0")
                break
            except FileExistsError:
                pass
            found = self._read_gcs()
            if found is None:
                continue
            holder, generation, age = found
            if _alive_here(holder) and age < self.stale_after_s:
                raise _refusal(self.path, holder)
            try:
                self._generation = self._upload(payload, generation)
            except FileExistsError:
                continue  # Another run recovered it first; look again.
            self.recovered = holder
            logging.warning(
                "Recovered the stale lock %s of %s (last refreshed %.0f s ago).",
                self.path,
                _describe(holder),
                age,
            )
            break
        else:
            found = self._read_gcs()
            raise _refusal(self.path, found[0] if found else None)
        self._thread = threading.Thread(
            target=self._heartbeat, args=(payload,), daemon=True, name="lenggen-workdir-lock"
        )
        self._thread.start()

    def _heartbeat(self, payload: bytes) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._generation = self._upload(payload, self._generation)
            except FileExistsError:
                self.lost.set()
                logging.error("The workdir lock %s was taken over by another run.", self.path)
                return
            except Exception as error:  # A transient network error: try again next beat.
                logging.warning("Could not refresh the workdir lock %s: %s", self.path, error)


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
