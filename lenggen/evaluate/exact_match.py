"""Exact match per length bucket on one split.

Teacher forcing decides every example in one parallel pass per batch: greedy decoding writes the
gold target iff the gold token is the argmax at every target position (DESIGN.md). With
`metric="exact"` (the paper's), examples teacher forcing rejects are then greedy-decoded with the
KV cache and scored by the task's answer parser, because a parsed answer can still match when
the output differs from the target elsewhere (e.g. a missing final "."). With
`metric="teacher_forced"` the first pass alone decides (sequence exact match).
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from lenggen import results
from lenggen.data import loader
from lenggen.tasks import base as task_base


@dataclasses.dataclass(frozen=True)
class SplitEvaluation:
    """The scores of one split: `summary` is the results.json entry S."""

    summary: dict
    correct: np.ndarray  # [num_examples] bool, in record order.
    samples: list  # Greedy outputs of some failed examples, for people to read.


def _to_host(array: jax.Array) -> np.ndarray:
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def evaluate_split(
    params: Any,
    source: Any,
    *,
    task: task_base.Task,
    tokenizer: Any,
    mesh: jax.sharding.Mesh,
    batch_size: int,
    metric: str,
    teacher_forced_fn: Callable,
    greedy_fn: Callable | None = None,
    num_samples: int = 0,
) -> SplitEvaluation:
    """Scores every record of `source` (a data source of lenggen.data.dataset).

    Args:
      teacher_forced_fn: jitted `(params, batch) -> [batch] bool`
        (train.step.teacher_forced_correct).
      greedy_fn: jitted `(params, prompt_tokens, prompt_valid) -> [batch, new_tokens]`; needed
        for `metric="exact"`.
    """
    num_records = len(source)
    correct = np.zeros(num_records, dtype=bool)
    lengths = np.zeros(num_records, dtype=np.int64)
    seen = np.zeros(num_records, dtype=bool)
    samples = []
    for batch in loader.eval_batches(source, batch_size=batch_size):
        rows = np.flatnonzero(batch["example_mask"])
        indices = batch["index"][rows]
        verdict = _to_host(teacher_forced_fn(params, loader.to_global(batch, mesh)))[rows]
        failed = rows[~verdict]
        if metric == "exact" and failed.size:
            prompts = loader.to_global(loader.prompt_batch(batch), mesh)
            outputs = _to_host(
                greedy_fn(params, prompts["prompt_tokens"], prompts["prompt_valid"])
            )
            for row in failed:
                record = source[int(batch["index"][row])]
                prediction = tokenizer.decode(outputs[row].tolist())
                target = _text(record["target"])
                is_correct = task.score(prediction, target)
                verdict[np.flatnonzero(rows == row)[0]] = is_correct
                if not is_correct and len(samples) < num_samples:
                    samples.append(
                        dict(
                            length=int(record["length"]),
                            source=_text(record["source"]),
                            target=target,
                            prediction=prediction,
                        )
                    )
        correct[indices] = verdict
        lengths[indices] = batch["length"][rows]
        seen[indices] = True
    if not seen.all():
        raise RuntimeError(
            f"Evaluation skipped {int((~seen).sum())} of {num_records} records; "
            "lenggen.data.loader.eval_batches must cover every record."
        )
    return SplitEvaluation(
        summary=results.bucket_exact_match(lengths, correct), correct=correct, samples=samples
    )
