"""Orbax checkpoints of the train state: the latest few for resuming, and the best by validation.

Layout inside the workdir:
  checkpoints/<step>/  the newest `keep` states, saved every `checkpoint_every` steps and at the
                       end; a restart with the same workdir resumes from the newest that restores.
  best/<step>/         the state with the best validation exact match so far (the test split
                       is scored with the best-validation checkpoint: docs/paper.md,
                       "Training").
  checksums.json       {"format": 2, "algorithm": "sha256", "entries": {"checkpoints" | "best":
                       {step: [sha256 of each array]}}, "digest": sha256 of the entries},
                       recorded before each step's save starts.
  corrupt/<dir>-<step>-<time>/   checkpoints that failed to restore, moved aside (kept); also
                       a checksums.json that failed its own digest.

What a crash can leave, and why none of it is ever restored:
- A save killed part-way: Orbax writes each step to `<step>.orbax-checkpoint-tmp` and renames it
  to `<step>` only when every file is written, so an unfinished save is never listed as a step.
  Such directories are removed when the next run opens the workdir.
- A finished step whose files were damaged later (truncated, zeroed, bit-flipped): Orbax raises
  on truncated or zeroed files; a flipped bit in compressed array data can restore silently, which
  the checksum catches (sha256 over each array's dtype, shape and bytes, so swapped values are
  caught too). `restore_newest` then falls back to the next older step and moves the damaged one
  aside.
- A damaged or missing checksums.json (while checkpoints exist) is never ignored silently: it is
  moved aside with a warning that the existing checkpoints restore unverified this once, and
  new saves record their checksums in a new file.
- A save that fails (a full disk): `save`, `check` and `wait` raise CheckpointSaveError naming
  the path; Orbax deletes an old step only after a newer one commits, so the last complete
  checkpoint stays intact.

Every path goes through lenggen/rundir/storage.py, so the workdir may be local or on gs://.
"""

import dataclasses
import datetime
import errno
import hashlib
import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from lenggen.rundir import files, storage

BEST_METRIC = "validation_exact_match"
CHECKSUMS_FILE = files.CHECKSUMS_FILE
CHECKSUMS_FORMAT = 2
CORRUPT_DIR = files.CORRUPT_DIR
_UNFINISHED_SUFFIX = ".orbax-checkpoint-tmp"


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored, or none that can."""


class CheckpointSaveError(OSError):
    """A save that failed (e.g. a full disk); the checkpoints saved before it are intact."""


@dataclasses.dataclass(frozen=True)
class Restored:
    """The newest checkpoint that restored, and the newer ones that did not.

    Attributes:
      step: the restored step.
      state: the train state, laid out like the abstract state it was restored onto.
      skipped: (step, reason) of each newer checkpoint that failed; they were moved to
        `moved_to` (same order).
    """

    step: int
    state: Any
    skipped: tuple[tuple[int, str], ...] = ()
    moved_to: tuple[str, ...] = ()


def _host_array(leaf: jax.Array) -> np.ndarray:
    """The whole of `leaf` on this host (gathered from every process when it is spread)."""
    if getattr(leaf, "is_fully_addressable", True):
        return np.asarray(jax.device_get(leaf))
    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))


def leaf_checksum(array: np.ndarray) -> str:
    """sha256 (hex) of `<dtype name><shape list>` and the array's bytes in C order: any change
    to a value, its position, the dtype or the shape changes it, whatever the sharding."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.name}{list(array.shape)}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def state_checksum(state: Any) -> list[str]:
    """Per-leaf checksums (tree order) of a (possibly sharded, multi-process) state, on every
    process."""
    return [leaf_checksum(_host_array(leaf)) for leaf in jax.tree.leaves(state)]


def _entries_digest(entries: dict) -> str:
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()


def read_checksums(path: str | os.PathLike) -> tuple[dict, str | None]:
    """(entries, problem) of a checksums file: `entries` = {"checkpoints" | "best": {step:
    [leaf checksums]}}; `problem` says why the file cannot be trusted (then entries is {}),
    None when it verifies or does not exist."""
    try:
        if not storage.exists(path):
            return {}, None
        recorded = json.loads(storage.read_bytes(path).decode())
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError) as error:
        return {}, f"it does not read ({_describe(error)})"
    if not isinstance(recorded, dict) or recorded.get("format") != CHECKSUMS_FORMAT:
        return {}, f"it is not in format {CHECKSUMS_FORMAT} (sha256 per array)"
    entries = recorded.get("entries")
    if not isinstance(entries, dict) or recorded.get("digest") != _entries_digest(entries):
        return {}, "its own digest does not match its entries (the file was altered)"
    return entries, None


def write_checksums(path: str | os.PathLike, entries: dict) -> None:
    storage.write_json(
        path,
        dict(
            format=CHECKSUMS_FORMAT,
            algorithm="sha256",
            entries=entries,
            digest=_entries_digest(entries),
        ),
    )


def _all_processes(ok: bool) -> bool:
    """True iff `ok` holds on every process (a restore is used only if it worked everywhere)."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def _save_failure(error: BaseException) -> str:
    """The cause of a failed save in a few words (Orbax and TensorStore wrap it in pages)."""
    chain, seen = [error], set()
    while chain[-1].__cause__ or chain[-1].__context__:
        nxt = chain[-1].__cause__ or chain[-1].__context__
        if id(nxt) in seen:
            break
        seen.add(id(nxt))
        chain.append(nxt)
    for link in chain:
        if isinstance(link, OSError) and link.strerror:
            return link.strerror
    text = str(error)
    if "os_error_code='28'" in text or "No space left on device" in text:
        return os.strerror(errno.ENOSPC)
    return _describe(error)


class _Directory:
    """One Orbax-managed directory (checkpoints/ or best/), sharing the workdir's checksum file.

    `checksums` is the parent's view of that file: `entries` (verified when read) and `problem`
    (why the file read at start-up could not be trusted, else None).

    Read-only (`read_only`): nothing is created, removed or moved, and restores are still
    verified against checksums.json; a directory that does not exist has no steps.
    """

    def __init__(
        self,
        workdir: str,
        name: str,
        options: ocp.CheckpointManagerOptions,
        checksums: "_Checksums",
        read_only: bool = False,
    ):
        self.workdir = storage.resolve(workdir)
        self.name = name
        self.path = self.workdir / name
        self.checksums = checksums
        self.read_only = read_only
        if read_only:
            self.removed_unfinished = []
            options = dataclasses.replace(options, read_only=True, create=False)
        else:
            self.removed_unfinished = self._remove_unfinished_saves()
        # Orbax names its cross-process barriers by step: `best/` and `checkpoints/` saving
        # the same step would meet in one barrier and hang a multi-process run.
        options = dataclasses.replace(
            options,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix=name
            ),
        )
        try:
            self.manager = ocp.CheckpointManager(self.path, options=options)
        except Exception as error:  # e.g. a step's metrics file damaged: Orbax reads them all
            raise CheckpointError(
                f"{self.path} cannot be opened ({_describe(error)}). Move it aside (to keep it "
                "for inspection) and run the same command again"
                + (
                    ": evaluation then scores the newest checkpoint."
                    if name == "best"
                    else ": the run then starts from scratch."
                )
            ) from None
        self.pending: int | None = None  # the step of the save in flight
        self.failed: CheckpointSaveError | None = None

    def _remove_unfinished_saves(self) -> list[str]:
        """Deletes `<step>.orbax-checkpoint-tmp` left by a save that a crash interrupted."""
        if jax.process_index() != 0 or not self.path.is_dir():
            return []
        unfinished = sorted(e.name for e in self.path.iterdir() if _UNFINISHED_SUFFIX in e.name)
        for entry in unfinished:
            (self.path / entry).rmtree()
        return [f"{self.name}/{e}" for e in unfinished]

    def _fail(self, step: int, path: str, error: BaseException) -> CheckpointSaveError:
        newest = max((s for s in self.manager.all_steps() if s != step), default=None)
        kept = (
            f"The newest complete checkpoint, {self.name}/{newest}, is intact"
            if newest is not None
            else f"No complete checkpoint in {self.path} yet"
        )
        self.failed = CheckpointSaveError(
            f"Saving step {step} failed: {path}: {_save_failure(error)}. {kept}; free space "
            "(or fix the disk) and run the same command to resume."
        )
        return self.failed

    def check(self) -> None:
        """Raises CheckpointSaveError if the save in flight has failed (cheap: no waiting)."""
        if self.failed is not None:
            raise self.failed
        try:
            self.manager.check_for_errors()
        except Exception as error:
            raise self._fail(self.pending, f"{self.path}/{self.pending}", error) from None

    def save(self, step: int, state: Any, **kwargs) -> None:
        self.check()  # the previous save's failure first: it is the one to report
        checksum = state_checksum(state)
        if jax.process_index() == 0:
            # Recorded before the save starts: an entry whose step never finished is harmless,
            # a finished step without its entry would fail to verify.
            kept = {str(s) for s in self.manager.all_steps()}
            recorded = {
                k: v for k, v in self.checksums.entries.get(self.name, {}).items() if k in kept
            }
            self.checksums.entries[self.name] = dict(recorded, **{str(step): checksum})
            try:
                self.checksums.write()
            except OSError as error:
                raise self._fail(step, self.checksums.path, error) from None
        self.pending = step
        try:
            self.manager.save(step, args=ocp.args.StandardSave(state), force=True, **kwargs)
        except Exception as error:
            raise self._fail(step, f"{self.path}/{step}", error) from None

    def wait(self) -> None:
        """Waits for the save in flight; raises CheckpointSaveError if it failed."""
        if self.failed is not None:
            return  # already reported; Orbax would raise the same error again
        try:
            self.manager.wait_until_finished()
        except Exception as error:
            raise self._fail(self.pending, f"{self.path}/{self.pending}", error) from None

    def restore(self, step: int, abstract_state: Any) -> Any:
        """The state of `step`, verified against its checksum; raises on any failure."""
        state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
        if self.checksums.problem is not None:
            return state  # Reported once by Checkpoints.warnings; Orbax's checks only.
        expected = self.checksums.entries.get(self.name, {}).get(str(step))
        if expected is None:
            raise CheckpointError(
                f"{self.name}/{step} has no checksum in {CHECKSUMS_FILE}, so it cannot be "
                "verified (it was not saved by this run)."
            )
        got = state_checksum(state)
        if got != expected:
            paths = [jax.tree_util.keystr(p) for p, _ in jax.tree.leaves_with_path(state)]
            if len(got) != len(expected):
                bad = [f"{len(expected)} arrays recorded, {len(got)} restored"]
            else:
                bad = [p for p, a, b in zip(paths, got, expected, strict=True) if a != b]
            raise CheckpointError(
                f"{self.name}/{step} does not match the checksum recorded when it was saved "
                f"(differing arrays: {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''})."
            )
        return state

    def move_aside(self, step: int) -> str:
        """Moves a step that failed to restore to WORKDIR/corrupt/ (kept for inspection)."""
        if self.read_only:
            raise CheckpointError(
                f"{self.path}/{step} does not restore; opened read-only, so it was left in place."
            )
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        destination = self.workdir / CORRUPT_DIR / f"{self.name}-{step}-{stamp}"
        if jax.process_index() == 0:
            storage.move(self.path / str(step), destination)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"lenggen_move_aside_{self.name}_{step}")
        self.manager.reload()
        return str(destination)


class _Checksums:
    """WORKDIR/checksums.json, read and verified once; rewritten (whole) on every save."""

    def __init__(self, workdir: str | os.PathLike, read_only: bool = False):
        self.path = storage.resolve(workdir) / CHECKSUMS_FILE
        self.read_only = read_only
        self.entries, self.problem = read_checksums(self.path)
        self.moved_to: str | None = None

    def exists(self) -> bool:
        return storage.exists(self.path)

    def set_aside(self) -> None:
        """Moves a file that cannot be trusted to WORKDIR/corrupt/ (kept for inspection); new
        saves then record their checksums in a new file. Read-only: left in place."""
        if self.read_only or jax.process_index() != 0 or not self.exists():
            return
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        destination = self.path.parent / CORRUPT_DIR / f"{CHECKSUMS_FILE}-{stamp}"
        storage.move(self.path, destination)
        self.moved_to = str(destination)

    def write(self) -> None:
        write_checksums(self.path, self.entries)


class Checkpoints:
    """The latest-N and best-by-validation checkpoint managers of one workdir (local or gs://).

    With `create=False` (evaluating) a missing checkpoints/ or best/ is not created. With
    `read_only` (analysis, report) nothing in the workdir is created, removed or moved, and every
    restore is still verified against checksums.json.
    """

    def __init__(self, workdir: str, *, keep: int, create: bool = True, read_only: bool = False):
        self.workdir = str(storage.resolve(workdir))
        self._checksums = _Checksums(self.workdir, read_only)
        self._latest = _Directory(
            workdir,
            "checkpoints",
            ocp.CheckpointManagerOptions(max_to_keep=keep, create=create),
            self._checksums,
            read_only,
        )
        try:
            self._best = _Directory(
                workdir,
                "best",
                ocp.CheckpointManagerOptions(
                    max_to_keep=1,
                    best_fn=lambda metrics: metrics[BEST_METRIC],
                    best_mode="max",
                    create=create,
                ),
                self._checksums,
                read_only,
            )
        except CheckpointError:
            self._latest.manager.close()
            raise
        self.warnings: list[str] = []
        has_steps = bool(self._latest.manager.all_steps() or self._best.manager.all_steps())
        problem = self._checksums.problem
        if problem is None and has_steps and not self._checksums.exists():
            problem = "it is missing"
        if problem is not None and has_steps:
            self._checksums.problem = problem
            self._checksums.set_aside()
            moved = f" (moved to {self._checksums.moved_to})" if self._checksums.moved_to else ""
            self.warnings.append(
                f"Warning: {self._checksums.path} cannot be trusted: {problem}{moved}. The "
                "checkpoints already saved are restored unverified (Orbax's own checks only); "
                "new saves record their checksums anew."
            )
        else:
            self._checksums.problem = None

    @property
    def removed_unfinished(self) -> list[str]:
        """Unfinished saves (relative to the workdir) deleted when this object was created."""
        return self._latest.removed_unfinished + self._best.removed_unfinished

    def latest_step(self) -> int | None:
        return self._latest.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._latest.manager.all_steps())

    def save(self, step: int, state: Any) -> None:
        """Starts saving `step` (asynchronously).

        Raises:
          CheckpointSaveError: this save, or the previous one, failed (naming the path).
        """
        self._latest.save(step, state)

    def check(self) -> None:
        """Raises CheckpointSaveError as soon as an asynchronous save has failed."""
        self._latest.check()
        self._best.check()

    def restore_step(self, step: int, abstract_state: Any) -> Any:
        """The state of checkpoints/<step>, verified against its checksum; raises on failure."""
        return self._latest.restore(step, abstract_state)

    def restore_newest(self, abstract_state: Any) -> Restored | None:
        """Restores the newest checkpoint that restores intact; None when there is none at all.

        Steps that fail (unreadable, truncated, checksum mismatch) are moved to WORKDIR/corrupt/
        once an older one has restored, so a bug that fails every restore moves nothing.

        Raises:
          CheckpointError: checkpoints exist but none restores; names the workdir and each error.
        """
        steps = sorted(self._latest.manager.all_steps(), reverse=True)
        failures = []
        for step in steps:
            try:
                state = self._latest.restore(step, abstract_state)
                error = None
            except Exception as caught:  # Any failure to read makes this step unusable.
                state, error = None, caught
            if _all_processes(error is None):
                moved = tuple(self._latest.move_aside(s) for s, _ in failures)
                return Restored(step, state, tuple(failures), moved)
            failures.append((step, _describe(error) if error else "failed on another process"))
        if failures:
            raise CheckpointError(
                f"No checkpoint in {self._latest.path} can be restored (workdir {self.workdir}): "
                + "; ".join(f"step {s}: {why}" for s, why in failures)
                + ". Move the checkpoints directory aside to train from scratch."
            )
        return None

    def restore_latest(self, abstract_state: Any) -> Any:
        """The state of `restore_newest`; raises CheckpointError when there is no checkpoint."""
        restored = self.restore_newest(abstract_state)
        if restored is None:
            raise CheckpointError(f"No checkpoint in {self._latest.path}.")
        return restored.state

    def best(self) -> tuple[int, float] | None:
        """(step, validation exact match) of the best checkpoint, or None before the first."""
        step = self._best.manager.best_step()
        if step is None:
            return None
        metrics = self._best.manager.metrics(step) or {}
        return step, float(metrics[BEST_METRIC])

    def save_best(self, step: int, state: Any, validation_exact_match: float) -> None:
        self._best.save(step, state, metrics={BEST_METRIC: float(validation_exact_match)})

    def restore_best(self, abstract_state: Any) -> Any:
        """The best checkpoint's state.

        Raises:
          CheckpointError: it does not restore intact (there is no other best to fall back to).
        """
        step = self._best.manager.best_step()
        try:
            return self._best.restore(step, abstract_state)
        except Exception as error:
            raise CheckpointError(
                f"The best checkpoint {self._best.path}/{step} cannot be restored "
                f"({_describe(error)}). Move it aside to evaluate the newest checkpoint instead."
            ) from None

    def wait(self) -> None:
        """Blocks until every asynchronous save has been committed.

        Raises:
          CheckpointSaveError: a save failed (reported once; later waits return).
        """
        self._latest.wait()
        self._best.wait()

    def close(self) -> None:
        for directory in (self._latest, self._best):
            try:
                directory.manager.close()
            except Exception:
                if directory.failed is None:  # a failed save was already reported
                    raise
