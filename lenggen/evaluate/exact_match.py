"""Exact match per length bucket on one split.

Teacher forcing decides every example in one parallel pass per batch: greedy decoding writes the
gold target iff the gold token is the argmax at every target position (docs/paper.md,
"Evaluation"). With `metric="exact"` (the paper's), examples teacher forcing rejects are then
greedy-decoded with the KV cache and scored by the task's answer parser, because a parsed answer
can still match when the output differs from the target elsewhere (e.g. a missing final ".").
With `metric="teacher_forced"` the first pass alone decides (sequence exact match).

Several processes (jax.distributed): each reads, packs and scores only its own rows of every
global batch (lenggen.data.loader.eval_batches); the model runs on the global batch. The
verdicts are gathered once per split, so every process returns the same SplitEvaluation, equal
to a single process's: the same batches in the same order, only their rows spread over processes.
"""

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from lenggen import results
from lenggen.data import loader
from lenggen.tasks import base as task_base

METRICS = ("exact", "teacher_forced")


class EvaluationError(ValueError):
    """Evaluation arguments that cannot work."""


@dataclasses.dataclass(frozen=True)
class SplitEvaluation:
    """The scores of one split: `summary` is the results.json entry S."""

    summary: dict
    correct: np.ndarray  # [num_examples] bool, in record order.
    samples: list  # Greedy outputs of some failed examples, for people to read.


def _gather(local: np.ndarray) -> np.ndarray:
    """Every process's `local` (same shape everywhere) concatenated along axis 0 in process
    order; `local` itself in a single process."""
    return np.asarray(multihost_utils.process_allgather(local, tiled=True))


def _gather_json(items: list) -> list:
    """Every process's `items` (JSON values), concatenated in process order."""
    if jax.process_count() == 1:
        return list(items)
    data = np.frombuffer(json.dumps(items).encode(), dtype=np.uint8)
    sizes = _gather(np.array([data.size], dtype=np.int32))  # -> [processes]
    padded = np.zeros(int(sizes.max()), dtype=np.uint8)
    padded[: data.size] = data
    rows = _gather(padded).reshape(len(sizes), -1)  # -> [processes, longest]
    return [item for row, size in zip(rows, sizes) for item in json.loads(row[:size].tobytes())]


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

    Every process calls this with the same arguments and gets the same result.

    Args:
      batch_size: the global batch: a multiple of the mesh's data axis and of the process count.
      teacher_forced_fn: jitted `(params, batch) -> [batch] bool`
        (evaluate.steps.teacher_forced_correct).
      greedy_fn: jitted `(params, prompt_tokens, prompt_valid) -> [batch, new_tokens]`; needed
        for `metric="exact"`.
      num_samples: keep the greedy outputs of the first this many failed examples, in batch
        order then row order (the same ones for any process count): each process keeps the
        first of its own rows and they are gathered.
    """
    if metric not in METRICS:
        raise EvaluationError(f"Got metric={metric!r}; expected one of {', '.join(METRICS)}.")
    if metric == "exact" and greedy_fn is None:
        raise EvaluationError("Got metric='exact' without a greedy_fn; expected one to decode.")
    process_index, process_count = jax.process_index(), jax.process_count()
    data_shards = mesh.shape["data"]
    if batch_size < 1 or batch_size % data_shards or batch_size % process_count:
        raise EvaluationError(
            f"Got batch_size={batch_size}; expected a positive multiple of the mesh's data axis "
            f"({data_shards}) and of the process count ({process_count})."
        )
    num_records = len(source)
    if num_records == 0:
        return SplitEvaluation(
            summary=results.bucket_exact_match([], []), correct=np.zeros(0, dtype=bool), samples=[]
        )
    # Several processes plan the same batches from all sizes, each having read only its block;
    # a single process reads every record once, inside eval_batches (sizes=None).
    sizes = None
    if process_count > 1:
        sizes = _gather(
            loader.record_sizes(source, process_index=process_index, process_count=process_count)
        )[:num_records]
    batches = loader.eval_batches(
        source,
        batch_size=batch_size,
        sizes=sizes,
        process_index=process_index,
        process_count=process_count,
    )
    rows = []  # per batch: int32 [local_batch, 3] of (record index or -1, verdict, length)
    samples = []  # (batch number, process, row, sample) of this process's failed rows
    for number, batch in enumerate(batches):
        verdict = loader.to_local(teacher_forced_fn(params, loader.to_global(batch, mesh)))
        failed = np.flatnonzero(batch["example_mask"] & ~verdict)  # -> [failed] local rows
        if metric == "exact":
            # Decoding is one program over all processes: run it iff any process has a failure,
            # with prompts as wide as the global batch's longest.
            counts = _gather(np.array([failed.size, batch["source_length"].max()], np.int32))
            any_failed, longest = counts.reshape(process_count, 2).max(axis=0)
            if any_failed:
                prompts = loader.to_global(loader.prompt_batch(batch, longest=int(longest)), mesh)
                outputs = loader.to_local(
                    greedy_fn(params, prompts["prompt_tokens"], prompts["prompt_valid"])
                )  # -> [local_batch, new_tokens]
                for row in failed:
                    record = source[int(batch["index"][row])]
                    prediction = tokenizer.decode(outputs[row].tolist())
                    target = _text(record["target"])
                    verdict[row] = task.score(prediction, target)
                    if not verdict[row] and len(samples) < num_samples:
                        sample = dict(
                            length=int(record["length"]),
                            target=target,
                            source=_text(record["source"]),
                            prediction=prediction,
                        )
                        samples.append((number, process_index, int(row), sample))
        rows.append(np.stack([batch["index"], verdict, batch["length"]], axis=1).astype(np.int32))
    # -> [processes * num_batches * local_batch, 3]
    index, verdicts, length = _gather(np.concatenate(rows)).T
    real = index >= 0
    correct = np.zeros(num_records, dtype=bool)
    lengths = np.zeros(num_records, dtype=np.int64)
    correct[index[real]] = verdicts[real].astype(bool)
    lengths[index[real]] = length[real]
    if real.sum() != num_records or np.unique(index[real]).size != num_records:
        raise RuntimeError(
            f"Evaluation scored {np.unique(index[real]).size} distinct of {num_records} records "
            f"in {int(real.sum())} rows; lenggen.data.loader.eval_batches must cover every "
            "record exactly once."
        )
    # The first num_samples failures in (batch, global row) order, as one process finds them.
    gathered = sorted(_gather_json(samples), key=lambda entry: entry[:3])
    return SplitEvaluation(
        summary=results.bucket_exact_match(lengths, correct),
        correct=correct,
        samples=[entry[3] for entry in gathered[:num_samples]],
    )
