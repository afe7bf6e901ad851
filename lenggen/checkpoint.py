"""Orbax checkpoints of the train state: the latest few for resuming, and the best by validation.

Layout inside the workdir:
  checkpoints/<step>/  the newest `keep` states, saved every `checkpoint_every` steps and at the
                       end; a restart with the same workdir resumes from the newest.
  best/<step>/         the state with the best validation exact match so far (facts.md: the test
                       split is scored with the best-validation checkpoint).
Saves are asynchronous (Orbax's default); Orbax writes each step to a temporary directory and
renames it when complete, so a crash mid-save never leaves a step that looks finished.
"""

import os
from typing import Any

import orbax.checkpoint as ocp

BEST_METRIC = "validation_exact_match"


class Checkpoints:
    """The latest-N and best-by-validation checkpoint managers of one workdir."""

    def __init__(self, workdir: str, *, keep: int):
        self._latest = ocp.CheckpointManager(
            os.path.join(os.path.abspath(workdir), "checkpoints"),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )
        self._best = ocp.CheckpointManager(
            os.path.join(os.path.abspath(workdir), "best"),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1,
                best_fn=lambda metrics: metrics[BEST_METRIC],
                best_mode="max",
                create=True,
            ),
        )

    def latest_step(self) -> int | None:
        return self._latest.latest_step()

    def save(self, step: int, state: Any) -> None:
        self._latest.save(step, args=ocp.args.StandardSave(state), force=True)

    def restore_latest(self, abstract_state: Any) -> Any:
        step = self._latest.latest_step()
        return self._latest.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def best(self) -> tuple[int, float] | None:
        """(step, validation exact match) of the best checkpoint, or None before the first."""
        step = self._best.best_step()
        if step is None:
            return None
        metrics = self._best.metrics(step) or {}
        return step, float(metrics[BEST_METRIC])

    def save_best(self, step: int, state: Any, validation_exact_match: float) -> None:
        self._best.save(
            step,
            args=ocp.args.StandardSave(state),
            metrics={BEST_METRIC: float(validation_exact_match)},
            force=True,
        )

    def restore_best(self, abstract_state: Any) -> Any:
        step = self._best.best_step()
        return self._best.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def wait(self) -> None:
        """Blocks until every asynchronous save has been committed."""
        self._latest.wait_until_finished()
        self._best.wait_until_finished()

    def close(self) -> None:
        self._latest.close()
        self._best.close()
