"""Paths and whole-file writes that work the same on a local disk and on GCS (`gs://`).

Every path goes through `etils.epath` (the library Orbax and TFDS use), so a run directory on
`gs://bucket/...` takes the same code as a local one; without TensorFlow installed, epath reaches
GCS through fsspec's `gcsfs`. Other schemes (`s3://`, `hdfs://`, ...) are refused: they are
untested here.

Atomic replacement, per backend:
- Local disk: the bytes go to a temporary file in the same directory, are fsync'd, and the file
  is renamed over the old one (rename is atomic within a file system), so a crash leaves the old
  version or the new one, never a mix. The temporary file is created with mode 0o666 minus the
  umask, like any file the user's tools write (Python's NamedTemporaryFile would give 0600).
- GCS: rename is a copy plus a delete, so it is not used. A single object upload is atomic on
  its own: the object is replaced only when the upload completes, and readers see the previous
  generation until then. Each file is therefore written as one object upload. Appending (GCS has
  no append) re-uploads the whole object, which is fine for the kilobytes of metrics.jsonl. The
  workdir lock (lock.py) uses generation preconditions on top.
"""

import contextlib
import json
import os
import threading
from collections.abc import Callable
from typing import Any

from etils import epath

from lenggen import json_keys

GCS_SCHEME = "gs://"


class StorageError(ValueError):
    """A path on storage that is unsupported or cannot be reached."""


def is_gcs(path: str | os.PathLike) -> bool:
    return os.fspath(path).startswith(GCS_SCHEME)


def resolve(path: str | os.PathLike) -> epath.Path:
    """`path` as an epath.Path: gs:// as given, local paths absolute with `~` expanded.

    Raises:
      StorageError: a URI scheme other than gs:// (nothing is created locally for it).
    """
    text = os.fspath(path)
    if is_gcs(text):
        if not text[len(GCS_SCHEME) :].split("/")[0]:
            raise StorageError(f"{text}: expected gs://<bucket>/<path>.")
        return epath.Path(text)
    if "://" in text:
        raise StorageError(
            f"{text}: unsupported storage scheme {text.split('://')[0]!r}; use a local path or "
            "gs://<bucket>/<path>."
        )
    return epath.Path(os.path.abspath(os.path.expanduser(text)))


def _gcs_filesystem():
    try:
        import gcsfs
    except ImportError as error:
        raise StorageError(f"gs:// paths need gcsfs ({error}); pip install gcsfs.") from None
    del gcsfs
    import fsspec

    # The instance epath uses (fsspec caches filesystems by their arguments; these are
    # etils.epath's), so that emptying its listing cache here empties epath's.
    return fsspec.filesystem("gcs", finalize_on_close=True)


def gcs_filesystem():
    """The gcsfs filesystem behind epath's gs:// paths (STORAGE_EMULATOR_HOST is honoured),
    with its listing cache emptied: another process (or host) may have changed the bucket
    since, and a stale listing would hide a file that now exists."""
    filesystem = _gcs_filesystem()
    filesystem.invalidate_cache()
    return filesystem


def resolve_fresh(path: str | os.PathLike) -> epath.Path:
    """`path` resolved; on GCS, after emptying the listing cache (see gcs_filesystem)."""
    if is_gcs(path):
        gcs_filesystem()
    return resolve(path)


def bucket_and_key(path: str | os.PathLike) -> tuple[str, str]:
    """('bucket', 'a/b') of 'gs://bucket/a/b'."""
    text = os.fspath(path)[len(GCS_SCHEME) :]
    bucket, _, key = text.partition("/")
    return bucket, key.strip("/")


def _with_deadline[T](what: Callable[[], T], seconds: float, describe: str) -> T:
    """Runs `what` in a daemon thread; raises StorageError if it has not returned in time.

    Client libraries retry unreachable endpoints for minutes (and the credential lookup probes
    the GCE metadata server); a run must fail in seconds instead.
    """
    outcome: dict[str, Any] = {}

    def target():
        try:
            outcome["value"] = what()
        except BaseException as error:  # Handed to the caller's thread.
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True, name="lenggen-storage-probe")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise StorageError(
            f"{describe}: no answer within {seconds:.0f} s (no network, or the "
            "storage endpoint is unreachable)."
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def check_reachable(path: str | os.PathLike, *, timeout_s: float = 10.0) -> epath.Path:
    """Fails fast when `path` cannot be used, before anything is created locally.

    Local paths are left to the run (their errors name the path already). For gs:// the bucket
    must exist and answer within `timeout_s` with the credentials found.

    Raises:
      StorageError: one line naming the path: unsupported scheme, gcsfs missing, bucket missing,
        no credentials or permission, or no answer in time.
    """
    resolved = resolve(path)
    if not is_gcs(path):
        return resolved
    bucket, _ = bucket_and_key(path)
    where = os.fspath(path)

    def probe():
        filesystem = _gcs_filesystem()
        return filesystem.info(bucket)

    try:
        _with_deadline(probe, timeout_s, f"Cannot reach {where}")
    except StorageError:
        raise
    except FileNotFoundError:
        raise StorageError(f"Cannot use {where}: bucket gs://{bucket} does not exist.") from None
    except Exception as error:  # Credentials, permissions, network: all end the run here.
        text = " ".join(str(error).split())[:200]
        raise StorageError(
            f"Cannot use {where}: {type(error).__name__}: {text} (check credentials, e.g. "
            "'gcloud auth application-default login', and access to the bucket)."
        ) from None
    return resolved


def read_text(path: str | os.PathLike) -> str:
    return resolve_fresh(path).read_text()


def read_bytes(path: str | os.PathLike) -> bytes:
    return resolve_fresh(path).read_bytes()


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(read_text(path))


def exists(path: str | os.PathLike) -> bool:
    return resolve_fresh(path).exists()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replaces `path` with `data` atomically (see the module docstring); makes its parent."""
    target = resolve_fresh(path)
    if is_gcs(path):
        target.write_bytes(data)  # One object upload: atomic.
        gcs_filesystem()
        return
    os.makedirs(target.parent, exist_ok=True)
    temporary = f"{target.parent}/.{target.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    # 0o666 & ~umask, as for any file the user creates.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with _naming(target), os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def _naming(path: str | os.PathLike):
    """Re-raises an OSError that names no file (a failed write or flush, e.g. ENOSPC) with
    `path`, so the one-line report says which file could not be written."""
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, os.fspath(path)) from error


def json_text(payload: Any) -> str:
    return json.dumps(json_keys.natural_order(payload), indent=2) + "\n"


def write_json(path: str | os.PathLike, payload: Any) -> None:
    """Replaces `path` with `payload` as indented JSON, atomically. Serialising happens first,
    so a payload that does not serialise leaves the old file untouched."""
    write_bytes(path, json_text(payload).encode())


def write_lines(path: str | os.PathLike, lines: list[str]) -> None:
    """Replaces `path` with `lines` (each ending in a newline), atomically."""
    write_bytes(path, "".join(lines).encode())


def append_line(path: str | os.PathLike, line: str) -> None:
    """Appends one newline-terminated line. Locally a plain append (a crash can cut only the
    last line short); on GCS the object is re-uploaded whole (atomic, no cut lines)."""
    target = resolve_fresh(path)
    if is_gcs(path):
        old = target.read_bytes() if target.exists() else b""
        target.write_bytes(old + line.encode())
        gcs_filesystem()
        return
    os.makedirs(target.parent, exist_ok=True)
    with _naming(target), open(target, "a") as handle:
        handle.write(line)


def move(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Moves a file or directory. Atomic on a local disk; on GCS a copy of every object then a
    delete (a crash part-way leaves both copies, never neither)."""
    source_path, destination_path = resolve(source), resolve(destination)
    if is_gcs(source):
        filesystem = gcs_filesystem()
        source_name = os.fspath(source_path)[len(GCS_SCHEME) :]  # bucket/key, as gcsfs lists
        if filesystem.isdir(source_name):
            for name in filesystem.find(source_name):
                filesystem.copy(name, f"{destination_path}/{name[len(source_name) + 1 :]}")
        else:
            filesystem.copy(os.fspath(source_path), os.fspath(destination_path))
        filesystem.rm(os.fspath(source_path), recursive=True)
        filesystem.invalidate_cache()
        return
    os.makedirs(destination_path.parent, exist_ok=True)
    os.replace(source_path, destination_path)
