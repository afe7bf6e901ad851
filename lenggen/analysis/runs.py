"""A trained run read back from its workdir, and its teacher-forced attention on examples.

Read-only: the config is WORKDIR/config.json (written by the training loop), the parameters come
from the best-validation checkpoint (WORKDIR/best/<step>/, the one the paper scores) or the
newest one (WORKDIR/checkpoints/<step>/), opened read-only through lenggen.checkpoint, which
checks them against the run's checksums.json. WORKDIR may be local or gs://. The model is
rebuilt from the config; the examples are generated from the config's task and tokenized with
the task's word-level vocabulary, exactly as the dataset builder stores them.
"""

import dataclasses
import functools
import logging
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from lenggen import checkpoint as checkpoint_lib
from lenggen import provenance, quiet_logs, rundir, sharding, tasks
from lenggen.data import dataset, loader
from lenggen.data.tokenizer import Tokenizer
from lenggen.model import decoder
from lenggen.model.decoder import Decoder
from lenggen.model.positional import randomized
from lenggen.train import optimizer as optimizer_lib
from lenggen.train import state as state_lib

CHECKPOINTS = ("best", "latest")


class RunError(ValueError):
    """A workdir that holds no usable run."""


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained model and what it was trained on.

    Attributes:
      workdir: where it was read from (relative to the current directory where possible).
      config: the run's config.
      task: the config's task.
      tokenizer: the task's vocabulary (the one the run trained with).
      model: the Decoder rebuilt from `config.model`.
      params: the restored parameters.
      step: the training step of the checkpoint.
    """

    workdir: str
    config: ml_collections.ConfigDict
    task: tasks.Task
    tokenizer: Tokenizer
    model: Decoder
    params: Any
    step: int

    @property
    def label(self) -> str:
        """e.g. 'nope (seed 256788)'."""
        return f"{self.config.model.pe.name} (seed {self.config.seed})"


def _read_config(run_dir: rundir.RunDir) -> ml_collections.ConfigDict:
    try:
        saved = run_dir.config()
    except ValueError as error:
        raise RunError(f"{run_dir.file(rundir.CONFIG_FILE)} is not valid JSON ({error}).") from None
    if saved is None:
        raise RunError(
            f"No run config at {run_dir.file(rundir.CONFIG_FILE)}; expected a workdir written by "
            "lenggen.main."
        )
    return ml_collections.ConfigDict(saved)


def _restore(workdir: str, which: str, target: Any) -> tuple[int, Any]:
    """(step, state) of the best checkpoint (falling back to the newest) or of the newest,
    opened read-only and verified against the run's checksums.json."""
    if which not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {which!r}")
    # Orbax warns that a read-only manager saves nothing, and that the directory is read-only:
    # both are what this reader asked for.
    with quiet_logs.below(logging.ERROR, "orbax"):
        checkpoints = checkpoint_lib.Checkpoints(workdir, keep=1, read_only=True)
        try:
            best = checkpoints.best() if which == "best" else None
            if best is not None:
                return best[0], checkpoints.restore_best(target)
            step = checkpoints.latest_step()
            if step is not None:
                return step, checkpoints.restore_step(step, target)
        finally:
            checkpoints.close()
    raise RunError(
        f"No checkpoint under {workdir}/best or {workdir}/checkpoints (asked for {which!r}); "
        "train the run first."
    )


def load(workdir: str, checkpoint: str = "best") -> Run:
    """The run in `workdir` (local or gs://), its parameters from the `checkpoint` ('best' or
    'latest'). Read-only: nothing in the workdir is created or changed."""
    given, run_dir = workdir, rundir.RunDir(workdir)
    workdir = str(run_dir)  # Absolute when local: Orbax refuses relative checkpoint paths.
    config = _read_config(run_dir)
    task = tasks.get(config.task.name, **config.task.options.to_dict())
    tokenizer = Tokenizer.from_task(task)
    model = Decoder.from_config(config.model, tokenizer.vocab_size, digit_ids=tokenizer.digit_ids)
    # The state's layout on one device; parameter shapes do not depend on the sequence length.
    mesh = sharding.make_mesh((1, 1), jax.devices()[:1])
    layout = state_lib.layout(model, optimizer_lib.make_optimizer(config.train), mesh, 8)
    step, state = _restore(workdir, checkpoint, layout.restore_target())
    # Recorded in the analyses' JSON: relative to the current directory where it can be.
    return Run(
        provenance.portable_path(given), config, task, tokenizer, model, state["params"], int(step)
    )


def examples_per_length(
    task: tasks.Task, tokenizer: Tokenizer, split: str, per_length: int
) -> list[dict]:
    """The first `per_length` examples of each length bucket of `split`, as dataset records
    (`tokens`, `source_length`, `length`, `source`, `target`), in split order."""
    if per_length < 1:
        raise ValueError(f"per_length must be >= 1, got {per_length}")
    taken: dict[int, int] = {}
    records = []
    for example in task.examples(split):
        if taken.get(example.length, 0) < per_length:
            taken[example.length] = taken.get(example.length, 0) + 1
            records.append(dataset.encode_example(example, tokenizer))
    return records


def batches(records: Sequence[dict], batch_size: int, pad_multiple: int = 16):
    """Right-padded batches (lenggen.data.loader.pack) of one width, the longest record's
    rounded up to `pad_multiple`, so a model compiles once."""
    width = loader.round_up(max(len(r["tokens"]) for r in records), pad_multiple)
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        yield loader.pack(
            chunk, list(range(start, start + len(chunk))), width, batch_size=batch_size
        )


@functools.cache
def _attention_fn(model: Decoder, max_new_tokens: int):
    @jax.jit
    def attention(params, batch):
        # The positions evaluation uses (randomized ones for a run trained with them, from the
        # table greedy decoding with this budget draws).
        positions = randomized.model_positions(model.pe, batch, None, max_new_tokens=max_new_tokens)
        _, state = model.apply(
            {"params": params},
            batch["tokens"],
            positions,
            batch["valid"],
            mutable=["intermediates"],
        )
        return decoder.layer_intermediates(
            state["intermediates"], model.num_layers, "attention_weights"
        )

    return attention


def attention(run: Run, batch: dict) -> np.ndarray:
    """Teacher-forced attention probabilities on a packed batch, at the positions evaluation
    uses (0..T-1, or randomized positions when the run trained with them).

    Returns:
      `[layers, batch, heads, length, length]` float32 (rows of pads and filler rows are
      meaningless; select with `batch['valid']` and `batch['example_mask']`).
    """
    inputs = {key: batch[key] for key in ("tokens", "positions", "valid", "source_length")}
    weights = _attention_fn(run.model, run.config.eval.max_new_tokens)(run.params, inputs)
    return np.stack([np.asarray(w) for w in weights])
