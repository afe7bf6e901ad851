"""Orbax checkpoints of the train state: the latest few for resuming, and the best by validation.

Layout inside the workdir:
  checkpoints/<step>/  the newest `keep` states, saved every `checkpoint_every` steps and at the
                       end; a restart with the same workdir resumes from the newest that restores.
  best/<step>/         the state with the best validation exact match so far (the test split
                       is scored with the best-validation checkpoint: docs/paper.md,
                       "Training").
  checksums.json       {"checkpoints" | "best": {step: checksum of each array}}, recorded as
                       each step is saved.
  corrupt/<dir>-<step>-<time>/   checkpoints that failed to restore, moved aside (kept).

What a crash can leave, and why none of it is ever restored:
- A save killed part-way: Orbax writes each step to `<step>.orbax-checkpoint-tmp` and renames it
  to `<step>` only when every file is written, so an unfinished save is never listed as a step.
  Such directories are removed when the next run opens the workdir.
- A finished step whose files were damaged later (truncated, zeroed, bit-flipped): Orbax raises
  on truncated or zeroed files; a flipped bit in compressed array data can restore silently, which
  the checksum catches (it covers every bit of every array). `restore_newest` then falls back to
  the next older step and moves the damaged one aside.
"""

import dataclasses
import datetime
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lenggen.rundir import files, storage

BEST_METRIC = "validation_exact_match"
CHECKSUMS_FILE = files.CHECKSUMS_FILE
CORRUPT_DIR = files.CORRUPT_DIR
_UNFINISHED_SUFFIX = ".orbax-checkpoint-tmp"
_UNSIGNED = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored, or none that can."""


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


def _leaf_checksum(leaf: jax.Array) -> jax.Array:
    """The wrapping uint32 sum of the leaf's bit patterns: any single flipped bit changes it."""
    unsigned = _UNSIGNED.get(leaf.dtype.itemsize)
    if unsigned is None:
        raise CheckpointError(f"Cannot checksum a leaf of dtype {leaf.dtype}; expected 1, 2 or "
                              "4 bytes per element.")
    bits = jax.lax.bitcast_convert_type(leaf, unsigned).astype(jnp.uint32)
    # Integer sums wrap and are associative, so the value does not depend on the sharding.
    return jnp.sum(bits, dtype=jnp.uint32)


def _tree_checksum(state: Any) -> jax.Array:
    """`[num_leaves]` uint32, one checksum per leaf in tree order."""
    return jnp.stack([_leaf_checksum(leaf) for leaf in jax.tree.leaves(state)])


@functools.cache
def _jitted_checksum(mesh: jax.sharding.Mesh | None):
    # Replicated output, so that every process can read all of it.
    out = None if mesh is None else NamedSharding(mesh, P())
    return jax.jit(_tree_checksum, out_shardings=out)


def state_checksum(state: Any) -> list[int]:
    """Per-leaf checksums of a (possibly sharded, multi-process) state, on every process."""
    sharding = getattr(jax.tree.leaves(state)[0], "sharding", None)
    mesh = sharding.mesh if isinstance(sharding, NamedSharding) else None
    checksum = _jitted_checksum(mesh)(state)
    return [int(x) for x in np.asarray(jax.device_get(checksum))]


def _all_processes(ok: bool) -> bool:
    """True iff `ok` holds on every process (a restore is used only if it worked everywhere)."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


class _Directory:
    """One Orbax-managed directory (checkpoints/ or best/) and its checksum file.

    Read-only (`read_only`): nothing is created, removed or moved, and restores are still
    verified against checksums.json; a directory that does not exist has no steps.
    """

    def __init__(self, workdir: str, name: str, options: ocp.CheckpointManagerOptions,
                 read_only: bool = False):
        self.workdir = storage.resolve(workdir)
        self.name = name
        self.path = self.workdir / name
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
        self.manager = ocp.CheckpointManager(self.path, options=options)

    def _remove_unfinished_saves(self) -> list[str]:
        """Deletes `<step>.orbax-checkpoint-tmp` left by a save that a crash interrupted."""
        if jax.process_index() != 0 or not self.path.is_dir():
            return []
        unfinished = sorted(e.name for e in self.path.iterdir() if _UNFINISHED_SUFFIX in e.name)
        for entry in unfinished:
            (self.path / entry).rmtree()
        return [f"{self.name}/{e}" for e in unfinished]

    def _all_checksums(self) -> dict[str, dict[str, list[int]]]:
        try:
            recorded = storage.read_json(self.workdir / CHECKSUMS_FILE)
        except (OSError, ValueError):
            recorded = None
        # Absent or unreadable: restores are then checked by Orbax alone.
        return recorded if isinstance(recorded, dict) else {}

    def _checksums(self) -> dict[str, list[int]]:
        return self._all_checksums().get(self.name, {})

    def save(self, step: int, state: Any, **kwargs) -> None:
        checksum = state_checksum(state)
        if jax.process_index() == 0:
            # Recorded before the save starts: an entry whose step never finished is harmless,
            # a finished step without its entry would go unverified.
            kept = {str(s) for s in self.manager.all_steps()}
            everything = self._all_checksums()
            recorded = {k: v for k, v in everything.get(self.name, {}).items() if k in kept}
            everything[self.name] = dict(recorded, **{str(step): checksum})
            storage.write_json(self.workdir / CHECKSUMS_FILE, everything)
        self.manager.save(step, args=ocp.args.StandardSave(state), force=True, **kwargs)

    def restore(self, step: int, abstract_state: Any) -> Any:
        """The state of `step`, verified against its checksum; raises on any failure."""
        state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
        expected = self._checksums().get(str(step))
        if expected is not None:
            got = state_checksum(state)
            if got != expected:
                paths = [jax.tree_util.keystr(p) for p, _ in jax.tree.leaves_with_path(state)]
                bad = [p for p, a, b in zip(paths, got, expected, strict=True) if a != b]
                raise CheckpointError(
                    f"{self.name}/{step} does not match the checksum recorded when it was saved "
                    f"(differing arrays: {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''})."
                )
        return state

    def move_aside(self, step: int) -> str:
        """Moves a step that failed to restore to WORKDIR/corrupt/ (kept for inspection)."""
        if self.read_only:
            raise CheckpointError(f"{self.path}/{step} does not restore; opened read-only, so "
                                  "it was left in place.")
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        destination = self.workdir / CORRUPT_DIR / f"{self.name}-{step}-{stamp}"
        if jax.process_index() == 0:
            storage.move(self.path / str(step), destination)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"lenggen_move_aside_{self.name}_{step}")
        self.manager.reload()
        return str(destination)


class Checkpoints:
    """The latest-N and best-by-validation checkpoint managers of one workdir (local or gs://).

    With `read_only` (analysis, report) nothing in the workdir is created, removed or moved,
    and every restore is still verified against checksums.json.
    """

    def __init__(self, workdir: str, *, keep: int, read_only: bool = False):
        self.workdir = str(storage.resolve(workdir))
        self._latest = _Directory(
            workdir, "checkpoints", ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            read_only,
        )
        self._best = _Directory(
            workdir, "best",
            ocp.CheckpointManagerOptions(
                max_to_keep=1,
                best_fn=lambda metrics: metrics[BEST_METRIC],
                best_mode="max",
                create=True,
            ),
            read_only,
        )

    @property
    def removed_unfinished(self) -> list[str]:
        """Unfinished saves (relative to the workdir) deleted when this object was created."""
        return self._latest.removed_unfinished + self._best.removed_unfinished

    def latest_step(self) -> int | None:
        return self._latest.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._latest.manager.all_steps())

    def save(self, step: int, state: Any) -> None:
        self._latest.save(step, state)

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
            ) from error

    def wait(self) -> None:
        """Blocks until every asynchronous save has been committed."""
        self._latest.manager.wait_until_finished()
        self._best.manager.wait_until_finished()

    def close(self) -> None:
        self._latest.manager.close()
        self._best.manager.close()
