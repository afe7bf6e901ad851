"""Batches for training and evaluation: pure numpy, then `to_global` onto the mesh.

A source is any random-access sequence of records (`len(source)`, `source[i]`, and optionally
`source.__getitems__(indices)` as tfds' ArrayRecordDataSource has); a record is a dict with
`tokens` (int [tokens]: source ids + target ids + EOS), `source_length` and `length`.

Every batch is a dict of numpy arrays:
  tokens         int32   [batch, seq_len]  right-padded with PAD_ID (the paper pads on the right)
  positions      int32   [batch, seq_len]  0..seq_len-1 on every row (pads too: they are masked)
  valid          bool    [batch, seq_len]  True on real tokens
  loss_mask      float32 [batch, seq_len]  1 where the TOKEN is a target token or the EOS
  source_length  int32   [batch]           the number of prompt tokens of each row
  length         int32   [batch]           the row's length bucket
  example_mask   bool    [batch]           False on filler rows
  index          int32   [batch]           the record's index in its split; -1 on filler rows

The model predicts tokens[:, t] from logits[:, t - 1], so the loss on target tokens and EOS only
(docs/paper.md "Training") is `sum(loss_mask[:, 1:] * nll(logits[:, :-1], tokens[:, 1:]))`.

Filler rows (only in the last evaluation batch) repeat the batch's first row, so that no row is
fully masked (a fully masked attention row can give NaN, and NaN * 0 is still NaN), with
loss_mask 0, example_mask False and index -1.

With several processes (jax.distributed) every process reads and packs only its own rows of
each global batch, the same rows for any device layout: `TrainBatches(..., process_index,
process_count)` and `eval_batches(..., process_index=, process_count=)`; `to_global` joins the
shares into global arrays and `to_local` takes a process's rows back out of a result.
"""

from collections.abc import Iterator, Sequence

import numpy as np

from lenggen.data.tokenizer import PAD_ID

# Records are read this many at a time when a whole split is scanned.
_READ_CHUNK = 4096


class BatchError(ValueError):
    """A record that does not fit, or batch arguments that cannot work."""


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= n."""
    return -(-n // multiple) * multiple


def _describe(source) -> str:
    split = getattr(source, "split", None)
    return f"split {split!r}" if split is not None else f"source {type(source).__name__}"


def _read(source, indices: Sequence[int]) -> list[dict]:
    indices = [int(i) for i in indices]
    if hasattr(source, "__getitems__"):
        # One call per batch: ~5x faster than record-by-record reads of array_record.
        return list(source.__getitems__(indices))
    return [source[i] for i in indices]


def _read_all(source) -> list[dict]:
    records = []
    for start in range(0, len(source), _READ_CHUNK):
        records += _read(source, range(start, min(start + _READ_CHUNK, len(source))))
    return records


def pack(
    records: Sequence[dict],
    indices: Sequence[int],
    seq_len: int,
    *,
    batch_size: int | None = None,
    origin: str = "source",
) -> dict[str, np.ndarray]:
    """Right-pads `records` (their record indices given) into one batch of width `seq_len`.

    Rows past `len(records)`, up to `batch_size`, are filler rows (see the module docstring).
    """
    batch_size = len(records) if batch_size is None else batch_size
    if not 0 < len(records) <= batch_size:
        raise BatchError(
            f"Got {len(records)} records for a batch of {batch_size}; expected 1 to {batch_size}."
        )
    tokens = np.full((batch_size, seq_len), PAD_ID, dtype=np.int32)
    lengths = np.zeros(batch_size, dtype=np.int32)  # tokens per row
    source_length = np.zeros(batch_size, dtype=np.int32)
    bucket = np.zeros(batch_size, dtype=np.int32)
    for row, (record, index) in enumerate(zip(records, indices, strict=True)):
        row_tokens = np.asarray(record["tokens"])
        if len(row_tokens) > seq_len:
            raise BatchError(
                f"Record {index} of {origin} has {len(row_tokens)} tokens; expected at most "
                f"seq_len={seq_len}."
            )
        tokens[row, : len(row_tokens)] = row_tokens
        lengths[row] = len(row_tokens)
        source_length[row] = record["source_length"]
        bucket[row] = record["length"]
    count = len(records)
    # Filler rows repeat row 0 (never fully masked) and carry no loss.
    tokens[count:], lengths[count:] = tokens[0], lengths[0]
    source_length[count:], bucket[count:] = source_length[0], bucket[0]
    columns = np.arange(seq_len, dtype=np.int32)  # -> [seq_len]
    valid = columns[None, :] < lengths[:, None]  # -> [batch, seq_len]
    loss_mask = valid & (columns[None, :] >= source_length[:, None])
    example_mask = np.arange(batch_size) < count
    loss_mask &= example_mask[:, None]
    index = np.full(batch_size, -1, dtype=np.int32)
    index[:count] = indices
    return {
        "tokens": tokens,
        "positions": np.broadcast_to(columns, (batch_size, seq_len)).copy(),
        "valid": valid,
        "loss_mask": loss_mask.astype(np.float32),
        "source_length": source_length,
        "length": bucket,
        "example_mask": example_mask,
        "index": index,
    }


def _check_process(process_index: int, process_count: int) -> None:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise BatchError(
            f"Got process_index={process_index}, process_count={process_count}; "
            "expected 0 <= process_index < process_count."
        )


class TrainBatches:
    """Shuffled training batches, a pure function of (seed, step): no iterator state.

    The record stream is the concatenation of epochs, epoch e being the permutation
    `np.random.default_rng([seed, e]).permutation(N)` of the N records. Step s takes stream
    positions [s * global_batch_size, (s + 1) * global_batch_size): within an epoch no record
    repeats and none is skipped, and a batch straddling an epoch boundary takes the tail of one
    epoch and the head of the next. Resuming at step s reproduces the same batches. The global
    batch is the same for any process_count; process i gets rows
    [i * local, (i + 1) * local) of it, local = global_batch_size // process_count.
    """

    def __init__(
        self,
        source,
        *,
        global_batch_size: int,
        seq_len: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
    ):
        if len(source) == 0:
            raise BatchError(f"{_describe(source)} is empty; expected at least one record.")
        _check_process(process_index, process_count)
        if global_batch_size < 1 or global_batch_size % process_count:
            raise BatchError(
                f"global_batch_size={global_batch_size} must be a positive multiple "
                f"of process_count={process_count}."
            )
        if seq_len < 1 or seed < 0:
            raise BatchError(
                f"Got seq_len={seq_len}, seed={seed}; expected seq_len >= 1 and a "
                "non-negative seed."
            )
        self.source = source
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // process_count
        self.seq_len = seq_len
        self.seed = seed
        self.process_index = process_index
        self._permutations: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            if len(self._permutations) >= 2:  # a batch spans at most a few epochs; keep it small
                self._permutations.pop(min(self._permutations))
            rng = np.random.default_rng([self.seed, epoch])
            self._permutations[epoch] = rng.permutation(len(self.source))
        return self._permutations[epoch]

    def indices(self, step: int) -> np.ndarray:
        """The record indices of this process's rows at `step`: int64 [local_batch]."""
        if step < 0:
            raise BatchError(f"Got step={step}; expected step >= 0.")
        start = step * self.global_batch_size + self.process_index * self.local_batch_size
        stream = start + np.arange(self.local_batch_size, dtype=np.int64)  # -> [local_batch]
        epochs, offsets = np.divmod(stream, len(self.source))
        indices = np.empty_like(stream)
        for epoch in np.unique(epochs):
            here = epochs == epoch
            indices[here] = self._permutation(int(epoch))[offsets[here]]
        return indices

    def get(self, step: int) -> dict[str, np.ndarray]:
        """This process's batch at `step`: arrays [global_batch_size // process_count, ...]."""
        indices = self.indices(step)
        records = _read(self.source, indices)
        return pack(records, indices, self.seq_len, origin=_describe(self.source))


def record_sizes(source, *, process_index: int = 0, process_count: int = 1) -> np.ndarray:
    """The token counts of this process's block of records: int32 [ceil(num_records / count)].

    Process i reads records [i * block, (i + 1) * block) only; entries past the last record are
    -1. Concatenated in process order (`process_allgather(..., tiled=True)`) and cut to
    `len(source)`, the blocks are every record's size: what `eval_batches` needs to plan the
    batches, while each process reads only its share of the records.
    """
    _check_process(process_index, process_count)
    block = -(-len(source) // process_count)
    start = min(process_index * block, len(source))
    stop = min(start + block, len(source))
    sizes = np.full(block, -1, dtype=np.int32)
    for offset in range(start, stop, _READ_CHUNK):
        chunk = _read(source, range(offset, min(offset + _READ_CHUNK, stop)))
        sizes[offset - start : offset - start + len(chunk)] = [len(r["tokens"]) for r in chunk]
    return sizes


def eval_batches(
    source,
    *,
    batch_size: int,
    pad_multiple: int = 16,
    sizes=None,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict]:
    """Every record exactly once, in global batches of `batch_size` ordered by token count.

    Sorting by length keeps each batch's rows alike; each batch's width is its longest row rounded
    up to a multiple of `pad_multiple`, so a split compiles at most a few shapes. The last batch is
    completed with filler rows (example_mask False) so every batch has `batch_size` rows.

    Several processes: each yields only its rows [i * local, (i + 1) * local) of every global
    batch (local = batch_size // process_count), at the global batch's width, and reads only
    their records; `to_global` puts them together. A process whose share of the last batch holds
    no record gets filler rows copying the batch's first record.

    Args:
      sizes: int [num_records], the token count of every record (e.g. `record_sizes` gathered
        from all processes); when None every record is read here to find them.

    Yields:
      batches of `batch_size // process_count` rows (see the module docstring).
    """
    _check_process(process_index, process_count)
    if batch_size < 1 or pad_multiple < 1 or batch_size % process_count:
        raise BatchError(
            f"Got batch_size={batch_size}, pad_multiple={pad_multiple}; expected "
            f"both >= 1 and batch_size a multiple of process_count={process_count}."
        )
    if sizes is None:
        records = _read_all(source)
        sizes = np.array([len(r["tokens"]) for r in records], dtype=np.int64)

        def read(indices):
            return [records[i] for i in indices]
    else:
        sizes = np.asarray(sizes)
        if sizes.shape != (len(source),):
            raise BatchError(
                f"Got sizes of shape {sizes.shape} for {_describe(source)}; expected "
                f"({len(source)},), one per record."
            )

        def read(indices):
            return _read(source, indices)

    local = batch_size // process_count
    order = np.argsort(sizes, kind="stable")  # ties keep record order
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]  # -> [<= batch_size] record indices
        width = round_up(int(sizes[chosen].max()), pad_multiple)
        mine = chosen[process_index * local : (process_index + 1) * local]
        if mine.size:
            yield pack(read(mine), mine, width, batch_size=local, origin=_describe(source))
        else:  # This process's share of the last batch is past the last record: all filler.
            batch = pack(
                read(chosen[:1]), chosen[:1], width, batch_size=local, origin=_describe(source)
            )
            batch["example_mask"][0], batch["index"][0], batch["loss_mask"][0] = False, -1, 0.0
            yield batch


def prompt_batch(
    batch: dict, *, pad_id: int = PAD_ID, pad_multiple: int = 16, longest: int | None = None
) -> dict:
    """The prompts (source tokens only) of a batch, LEFT-padded to a common width for decoding.

    Left padding puts every prompt's last token in the last column, so greedy decoding appends
    column by column for all rows at once. The model must then take positions from the mask,
    `positions = cumsum(prompt_valid, axis=-1) - 1`, so each prompt still starts at position 0.

    Args:
      batch: a batch from `eval_batches` (or `pack`).
      pad_id: the id written in the padding columns.
      pad_multiple: the width is the longest prompt rounded up to this multiple (fewer shapes).
      longest: the longest prompt of the global batch when `batch` is one process's share:
        every process must build the same width. Default: the longest prompt of `batch`.

    Returns:
      `prompt_tokens` int32 [batch, prompt_len] and `prompt_valid` bool [batch, prompt_len].
    """
    source_length = batch["source_length"]  # -> [batch]
    here = int(source_length.max())
    if longest is None:
        longest = here
    elif longest < here:
        raise BatchError(
            f"Got longest={longest} but this batch has a prompt of {here} tokens; "
            "expected the longest prompt of the global batch."
        )
    width = round_up(longest, pad_multiple)
    columns = np.arange(width)  # -> [prompt_len]
    # Column c of row b holds prompt token c - (width - n_b) when that is >= 0.
    shift = width - source_length  # -> [batch]
    prompt_valid = columns[None, :] >= shift[:, None]  # -> [batch, prompt_len]
    take = np.clip(columns[None, :] - shift[:, None], 0, None)
    gathered = np.take_along_axis(batch["tokens"], take, axis=1)
    prompt_tokens = np.where(prompt_valid, gathered, pad_id).astype(np.int32)
    return {"prompt_tokens": prompt_tokens, "prompt_valid": prompt_valid}


def sequence_length(source) -> int:
    """The number of tokens of the longest record in `source` (EOS included)."""
    if len(source) == 0:
        raise BatchError(f"{_describe(source)} is empty; expected at least one record.")
    return max(len(r["tokens"]) for r in _read_all(source))


def to_global(batch: dict, mesh, data_axis: str = "data") -> dict:
    """Puts a process-local batch on `mesh` as global jax.Arrays sharded over the batch dim.

    Every process passes its own rows, 1/process_count of the global batch (e.g.
    `TrainBatches.get`); the global array is their concatenation, split over the mesh's
    `data_axis` (`PartitionSpec(data_axis)`: the batch dimension sharded, the others
    replicated). Each process's devices must hold distinct rows: a mesh whose data axis does
    not split the batch over the processes (e.g. a model axis spanning them) is refused.
    """
    import jax  # The one jax import of lenggen.data: everything above is numpy.

    if data_axis not in mesh.axis_names:
        raise BatchError(f"Mesh has axes {mesh.axis_names}; expected one named {data_axis!r}.")
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(data_axis))
    rows = len(next(iter(batch.values())))
    global_rows = rows * jax.process_count()
    held = {
        index[0].indices(global_rows)[:2]
        for index in sharding.addressable_devices_indices_map((global_rows,)).values()
    }
    if sum(stop - start for start, stop in held) != rows:
        raise BatchError(
            f"This process has {rows} rows, 1/{jax.process_count()} of a global batch of "
            f"{global_rows}, but its devices hold {sum(b - a for a, b in held)} rows on mesh "
            f"{dict(mesh.shape)}; expected the {data_axis!r} axis to split the batch over the "
            f"processes (its size a multiple of {jax.process_count()}, a model axis within "
            "each process)."
        )
    return {
        key: jax.make_array_from_process_local_data(
            sharding, np.asarray(value), (global_rows, *np.shape(value)[1:])
        )
        for key, value in batch.items()
    }


def to_local(array) -> np.ndarray:
    """This process's rows of a global array sharded over its first (batch) dimension.

    The inverse of `to_global`, for outputs laid out like its batches (e.g. per-example
    verdicts `[batch]` -> `[batch // process_count]`): the rows of this process's devices in
    the order `to_global` took them (by position in the global array; model-axis replicas of
    the same rows are read once).
    """
    if array.ndim < 1:
        raise BatchError(f"Got an array of shape {array.shape}; expected a batch dimension.")
    shards = {}
    for shard in array.addressable_shards:
        shards.setdefault(shard.index[0].indices(array.shape[0])[0], shard.data)
    return np.concatenate([np.asarray(shards[start]) for start in sorted(shards)])
