import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from fake_task import FakeCopy

from lenggen.data import dataset, loader
from lenggen.data.tokenizer import Tokenizer

KEYS = (
    "tokens",
    "positions",
    "valid",
    "loss_mask",
    "source_length",
    "length",
    "example_mask",
    "index",
)


def _records(task, split):
    tokenizer = Tokenizer.from_task(task)
    return [dataset.encode_example(e, tokenizer) for e in task.examples(split)]


@pytest.fixture(scope="module")
def train():
    """FakeCopy(per_length=3) train records in memory: 9 records of 4, 6 or 8 tokens."""
    return _records(FakeCopy(), "train")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return dataset.prepare(FakeCopy(per_length=5), tmp_path_factory.mktemp("tfds"))


def _record(tokens, source_length, length):
    return {"tokens": np.array(tokens, np.int32), "source_length": source_length, "length": length}


def test_pack_masks_target_and_eos_tokens_only():
    # "a b [SEP]" -> "a b": 3 prompt tokens, 2 target tokens, EOS; width 8.
    batch = loader.pack([_record([3, 4, 2, 3, 4, 1], 3, 2)], [7], seq_len=8)
    assert batch["tokens"].tolist() == [[3, 4, 2, 3, 4, 1, 0, 0]]
    assert batch["positions"].tolist() == [[0, 1, 2, 3, 4, 5, 6, 7]]
    assert batch["valid"].tolist() == [[1, 1, 1, 1, 1, 1, 0, 0]]
    assert batch["loss_mask"].tolist() == [[0, 0, 0, 1, 1, 1, 0, 0]]
    assert batch["source_length"].tolist() == [3] and batch["length"].tolist() == [2]
    assert batch["example_mask"].tolist() == [True] and batch["index"].tolist() == [7]
    dtypes = {k: batch[k].dtype for k in KEYS}
    assert dtypes == {
        "tokens": np.int32,
        "positions": np.int32,
        "valid": np.bool_,
        "loss_mask": np.float32,
        "source_length": np.int32,
        "length": np.int32,
        "example_mask": np.bool_,
        "index": np.int32,
    }


def test_pack_pads_each_row_and_fills_with_masked_copies_of_row_zero():
    records = [_record([5, 2, 5, 1], 2, 1), _record([3, 6, 2, 3, 6, 1], 3, 2)]
    batch = loader.pack(records, [4, 0], seq_len=6, batch_size=3)
    assert batch["tokens"].tolist() == [[5, 2, 5, 1, 0, 0], [3, 6, 2, 3, 6, 1], [5, 2, 5, 1, 0, 0]]
    assert batch["valid"].tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6, [1, 1, 1, 1, 0, 0]]
    assert batch["loss_mask"].tolist() == [[0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1], [0] * 6]
    assert batch["example_mask"].tolist() == [True, True, False]
    assert batch["index"].tolist() == [4, 0, -1]
    assert batch["length"].tolist() == [1, 2, 1]


def test_a_sequence_longer_than_seq_len_raises(prepared):
    with pytest.raises(
        loader.BatchError, match="Record 3 of source has 6 tokens; expected at most seq_len=5"
    ):
        loader.pack([_record([3, 6, 2, 3, 6, 1], 3, 2)], [3], seq_len=5)
    # On a prepared split the message names the split; the longest test record has 12 tokens.
    batches = loader.TrainBatches(prepared.splits["test"], global_batch_size=10, seq_len=11, seed=0)
    with pytest.raises(
        loader.BatchError,
        match=r"Record \d+ of split 'test' has 12 tokens; "
        "expected at most seq_len=11",
    ):
        for step in range(3):
            batches.get(step)


def test_train_batches_are_a_function_of_seed_and_step(train):
    first = loader.TrainBatches(train, global_batch_size=4, seq_len=8, seed=3)
    # Walk one instance forward, then ask a fresh one (a resumed run) for the same step.
    walked = [first.get(step) for step in range(6)]
    resumed = loader.TrainBatches(train, global_batch_size=4, seq_len=8, seed=3).get(5)
    for key in KEYS:
        np.testing.assert_array_equal(walked[5][key], resumed[key])
    np.testing.assert_array_equal(first.get(2)["tokens"], walked[2]["tokens"])
    other_seed = loader.TrainBatches(train, global_batch_size=4, seq_len=8, seed=4)
    assert [other_seed.indices(s).tolist() for s in range(3)] != [
        first.indices(s).tolist() for s in range(3)
    ]


def test_train_batches_follow_the_per_epoch_permutations(train):
    # 9 records, batches of 4: step 2 straddles epochs 0 and 1 (tail of one, head of the next).
    batches = loader.TrainBatches(train, global_batch_size=4, seq_len=8, seed=11)
    stream = np.concatenate([np.random.default_rng([11, e]).permutation(9) for e in range(4)])
    got = np.concatenate([batches.indices(step) for step in range(9)])  # 36 = 4 epochs
    np.testing.assert_array_equal(got, stream)
    for epoch in range(4):
        assert sorted(got[9 * epoch : 9 * epoch + 9].tolist()) == list(range(9))
    assert batches.get(2)["index"].tolist() == stream[8:12].tolist()
    batch = batches.get(0)
    for row, index in enumerate(batch["index"]):
        n = len(train[index]["tokens"])
        assert batch["tokens"][row, :n].tolist() == train[index]["tokens"].tolist()
    assert batch["example_mask"].all()


def test_one_epoch_covers_every_prepared_record_once(prepared):
    source = prepared.splits["train"]  # 15 records
    batches = loader.TrainBatches(source, global_batch_size=5, seq_len=8, seed=0)
    seen = np.concatenate([batches.get(step)["index"] for step in range(3)])
    assert sorted(seen.tolist()) == list(range(15))


def test_global_batch_is_the_same_for_any_process_count(train):
    single = loader.TrainBatches(train, global_batch_size=6, seq_len=8, seed=5)
    halves = [
        loader.TrainBatches(
            train, global_batch_size=6, seq_len=8, seed=5, process_index=i, process_count=2
        )
        for i in range(2)
    ]
    for step in (0, 1, 7):
        parts = [h.get(step) for h in halves]
        assert parts[0]["tokens"].shape == (3, 8)
        whole = single.get(step)
        for key in KEYS:
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"global_batch_size": 5, "process_count": 2},
            "global_batch_size=5 must be a positive multiple of process_count=2",
        ),
        ({"process_index": 2, "process_count": 2}, "process_index=2, process_count=2"),
        ({"seed": -1}, "seed=-1"),
    ],
)
def test_train_batches_reject_bad_arguments(train, kwargs, message):
    arguments = {"global_batch_size": 4, "seq_len": 8, "seed": 0} | kwargs
    with pytest.raises(loader.BatchError, match=message):
        loader.TrainBatches(train, **arguments)


def test_eval_batches_cover_every_record_once_sorted_with_fillers_masked(prepared):
    source = prepared.splits["test"]  # 10 records: 5 of 10 tokens, then 5 of 12
    batches = list(loader.eval_batches(source, batch_size=4, pad_multiple=8))
    assert len(batches) == 3
    assert [b["tokens"].shape for b in batches] == [(4, 16), (4, 16), (4, 16)]
    indices = np.concatenate([b["index"][b["example_mask"]] for b in batches])
    assert sorted(indices.tolist()) == list(range(10))
    sizes = [int(b["valid"][r].sum()) for b in batches for r in np.flatnonzero(b["example_mask"])]
    assert sizes == sorted(sizes) == [10] * 5 + [12] * 5
    last = batches[-1]
    assert last["example_mask"].tolist() == [True, True, False, False]
    assert last["index"].tolist()[2:] == [-1, -1]
    assert last["loss_mask"][2:].sum() == 0 and last["valid"][2:].any(axis=1).all()
    for batch in batches:
        for row in np.flatnonzero(batch["example_mask"]):
            record = source[int(batch["index"][row])]
            n = len(record["tokens"])
            assert batch["tokens"][row, :n].tolist() == record["tokens"].tolist()
            assert batch["loss_mask"][row].sum() == n - record["source_length"]


def _every_query_sees_a_key(batch) -> bool:
    """Causal by position: query t sees the valid keys at positions <= t."""
    seen = np.cumsum(batch["valid"], axis=1) > 0  # [batch, seq_len]: a valid key at or before t
    return bool(seen.all())


def test_every_query_of_every_batch_sees_at_least_one_key(prepared):
    # cuDNN's fused attention gives wrong q, k, v gradients for a query that sees no key
    # (benchmarks/results/gpu_session_h200.md); no batch the loader makes may have one.
    train = loader.TrainBatches(prepared.splits["train"], global_batch_size=4, seq_len=16, seed=0)
    batches = [train.get(step) for step in range(8)]
    batches += list(loader.eval_batches(prepared.splits["test"], batch_size=4, pad_multiple=8))
    assert all(_every_query_sees_a_key(batch) for batch in batches)
    # The check itself: a row whose first token is padding has a query that sees no key.
    broken = dict(batches[0], valid=batches[0]["valid"].copy())
    broken["valid"][0, 0] = False
    assert not _every_query_sees_a_key(broken)


def test_eval_batch_width_is_the_longest_row_rounded_up(train):
    # Sorted sizes: three 4s, three 6s, three 8s; batches of 4 -> longest 6, 8, 8.
    batches = loader.eval_batches(train, batch_size=4, pad_multiple=3)
    widths = [b["tokens"].shape[1] for b in batches]
    assert widths == [6, 9, 9]


def test_prompt_batch_left_pads_the_prompts():
    records = [_record([5, 2, 5, 1], 2, 1), _record([3, 6, 2, 3, 6, 1], 3, 2)]
    batch = loader.pack(records, [0, 1], seq_len=8, batch_size=3)
    prompts = loader.prompt_batch(batch, pad_multiple=1)
    assert prompts["prompt_tokens"].tolist() == [[0, 5, 2], [3, 6, 2], [0, 5, 2]]
    assert prompts["prompt_valid"].tolist() == [[0, 1, 1], [1, 1, 1], [0, 1, 1]]
    wide = loader.prompt_batch(batch, pad_id=9, pad_multiple=4)
    assert wide["prompt_tokens"].tolist() == [[9, 9, 5, 2], [9, 3, 6, 2], [9, 9, 5, 2]]
    assert wide["prompt_tokens"].dtype == np.int32
    # Positions recomputed from the mask start every prompt at 0.
    positions = np.cumsum(wide["prompt_valid"], axis=1) - 1
    assert positions[wide["prompt_valid"]].tolist() == [0, 1, 0, 1, 2, 0, 1]


def test_sequence_length(train):
    assert loader.sequence_length(train) == 8
    assert loader.round_up(8, 8) == 8 and loader.round_up(9, 8) == 16
    with pytest.raises(loader.BatchError, match="is empty"):
        loader.sequence_length([])


def test_to_global_on_one_device(train):
    import jax

    mesh = jax.make_mesh(
        (1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:1]
    )
    batch = loader.TrainBatches(train, global_batch_size=4, seq_len=8, seed=0).get(0)
    arrays = loader.to_global(batch, mesh)
    assert set(arrays) == set(KEYS)
    for key in KEYS:
        np.testing.assert_array_equal(np.asarray(arrays[key]), batch[key])
        assert arrays[key].sharding.spec == jax.sharding.PartitionSpec("data")
    with pytest.raises(loader.BatchError, match=r"expected one named 'batch'"):
        loader.to_global(batch, mesh, data_axis="batch")


_FOUR_DEVICES = textwrap.dedent("""
    import jax, numpy as np
    from lenggen.data import loader
    assert jax.device_count() == 4
    mesh = jax.make_mesh((4, 1), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    records = [{"tokens": np.arange(1, 3 + i, dtype=np.int32), "source_length": 1, "length": i}
               for i in range(8)]
    batch = loader.pack(records, list(range(8)), seq_len=10)
    arrays = loader.to_global(batch, mesh)
    shards = sorted(arrays["tokens"].addressable_shards, key=lambda s: s.index[0].start)
    assert [s.data.shape for s in shards] == [(2, 10)] * 4
    for i, shard in enumerate(shards):
        np.testing.assert_array_equal(np.asarray(shard.data), batch["tokens"][2 * i : 2 * i + 2])
    np.testing.assert_array_equal(np.asarray(arrays["length"]), np.arange(8))
    print("ok")
""")


def test_to_global_shards_the_batch_over_four_fake_devices():
    # A subprocess: this process's jax backend may already be up with one device.
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    root = pathlib.Path(__file__).parents[2]  # so that `import lenggen` works
    result = subprocess.run(
        [sys.executable, "-c", _FOUR_DEVICES],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_record_sizes_blocks_join_into_every_records_size(prepared):
    source = prepared.splits["test"]  # 10 records: 5 of 10 tokens, then 5 of 12
    every = [len(source[i]["tokens"]) for i in range(10)]
    blocks = [loader.record_sizes(source, process_index=i, process_count=3) for i in range(3)]
    # ceil(10 / 3) = 4 per process; the last block holds records 8, 9 and two -1 entries.
    assert [b.tolist() for b in blocks] == [every[0:4], every[4:8], every[8:10] + [-1, -1]]
    assert np.concatenate(blocks)[:10].tolist() == every
    assert loader.record_sizes(source).tolist() == every


def _eval_shares(source, batch_size, process_count, **kwargs):
    """Per process, its list of eval batches."""
    return [
        list(
            loader.eval_batches(
                source,
                batch_size=batch_size,
                process_index=i,
                process_count=process_count,
                **kwargs,
            )
        )
        for i in range(process_count)
    ]


def test_eval_batches_per_process_join_into_the_single_process_batches(prepared):
    source = prepared.splits["test"]  # 10 records: 5 of 10 tokens, then 5 of 12
    whole = list(loader.eval_batches(source, batch_size=6, pad_multiple=8))
    sizes = np.concatenate(
        [loader.record_sizes(source, process_index=i, process_count=3) for i in range(3)]
    )[:10]
    for kwargs in ({}, {"sizes": sizes}):  # sizes read here, or given (gathered)
        shares = _eval_shares(source, 6, 3, pad_multiple=8, **kwargs)
        assert [len(share) for share in shares] == [2, 2, 2]
        for number, batch in enumerate(whole):
            parts = [share[number] for share in shares]
            assert [p["tokens"].shape for p in parts] == [(2, 16)] * 3  # the global width
            for key in (
                "tokens",
                "valid",
                "loss_mask",
                "source_length",
                "length",
                "example_mask",
                "index",
            ):
                joined = np.concatenate([p[key] for p in parts])
                real = batch["example_mask"]
                np.testing.assert_array_equal(joined[real], batch[key][real])
            # Filler rows are flagged the same way wherever they fall.
            np.testing.assert_array_equal(
                np.concatenate([p["example_mask"] for p in parts]), batch["example_mask"]
            )
    # The last batch holds records 6..9 (4 of 6 rows): process 2's share is filler only.
    last = [share[1] for share in _eval_shares(source, 6, 3, pad_multiple=8)]
    assert [p["example_mask"].tolist() for p in last] == [
        [True, True],
        [True, True],
        [False, False],
    ]
    filler = last[2]
    assert filler["index"].tolist() == [-1, -1] and filler["loss_mask"].sum() == 0
    assert filler["valid"].any(axis=1).all()  # no fully masked row
    # It copies the global batch's first record (the first row of process 0's share).
    np.testing.assert_array_equal(filler["tokens"], np.stack([last[0]["tokens"][0]] * 2))
    indices = [
        int(i) for share in _eval_shares(source, 6, 3) for b in share for i in b["index"] if i >= 0
    ]
    assert sorted(indices) == list(range(10))


def test_eval_shares_read_only_their_own_records(prepared):
    class Counting:
        def __init__(self, source):
            self.source, self.read = source, []

        def __len__(self):
            return len(self.source)

        def __getitem__(self, index):
            self.read.append(index)
            return self.source[index]

    sizes = [len(r["tokens"]) for r in _records(FakeCopy(), "validation")]
    reads = []
    for i in range(2):
        counting = Counting(_records(FakeCopy(), "validation"))  # 9 records
        list(
            loader.eval_batches(
                counting, batch_size=4, sizes=sizes, process_index=i, process_count=2
            )
        )
        reads.append(counting.read)
    # Batches of 4 (sorted by size): process i reads rows 2i, 2i+1 of each; the last batch
    # holds one record, so process 1 reads that record once, for its filler rows.
    assert len(reads[0]) == 5 and len(reads[1]) == 5
    assert set(reads[0]) | set(reads[1]) == set(range(9))
    assert len(set(reads[0]) & set(reads[1])) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 6, "process_count": 4}, "batch_size a multiple of process_count=4"),
        (
            {"batch_size": 4, "process_index": 2, "process_count": 2},
            "process_index=2, process_count=2",
        ),
        ({"batch_size": 4, "sizes": [4, 6]}, r"sizes of shape \(2,\).*expected \(9,\)"),
    ],
)
def test_eval_batches_reject_bad_arguments(train, kwargs, message):
    with pytest.raises(loader.BatchError, match=message):
        next(loader.eval_batches(train, **kwargs))


def test_prompt_batch_takes_the_global_batchs_longest_prompt():
    records = [_record([5, 2, 5, 1], 2, 1), _record([3, 6, 2, 3, 6, 1], 3, 2)]
    batch = loader.pack(records, [0, 1], seq_len=8)
    # Another process's share had a 6-token prompt: this share pads to the same width.
    prompts = loader.prompt_batch(batch, pad_multiple=4, longest=6)
    assert prompts["prompt_tokens"].tolist() == [[0] * 6 + [5, 2], [0] * 5 + [3, 6, 2]]
    assert prompts["prompt_valid"].sum(axis=1).tolist() == [2, 3]
    with pytest.raises(
        loader.BatchError, match="Got longest=2 but this batch has a prompt of 3 tokens"
    ):
        loader.prompt_batch(batch, longest=2)


def test_to_local_takes_this_processs_rows_back_once_per_model_replica(train):
    import jax

    # conftest.py's 4 fake devices as data x model = 2 x 2: every row block is on 2 devices.
    mesh = jax.make_mesh((2, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    batch = loader.TrainBatches(train, global_batch_size=4, seq_len=8, seed=0).get(0)
    arrays = loader.to_global(batch, mesh)
    assert len(arrays["tokens"].addressable_shards) == 4
    for key in KEYS:
        np.testing.assert_array_equal(loader.to_local(arrays[key]), batch[key])
    verdict = jax.jit(lambda tokens: tokens[:, 0] > 4)(arrays["tokens"])
    np.testing.assert_array_equal(loader.to_local(verdict), batch["tokens"][:, 0] > 4)
    with pytest.raises(loader.BatchError, match=r"shape \(\); expected a batch dimension"):
        loader.to_local(verdict.sum())


def test_to_global_refuses_a_mesh_that_does_not_split_the_batch_over_processes(train, monkeypatch):
    import jax

    mesh = jax.make_mesh(
        (1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:1]
    )
    batch = loader.TrainBatches(train, global_batch_size=4, seq_len=8, seed=0).get(0)
    # As one of 2 processes whose devices would hold the whole global batch of 8 rows.
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(
        loader.BatchError,
        match=r"This process has 4 rows, 1/2 of a global batch "
        r"of 8, but its devices hold 8 rows on mesh \{'data': 1\}",
    ):
        loader.to_global(batch, mesh)
