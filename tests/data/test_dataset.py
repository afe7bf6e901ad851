import contextlib
import hashlib
import os

import numpy as np
import pytest
from fake_task import FakeCopy

from lenggen.data import dataset, loader
from lenggen.data.tokenizer import Tokenizer
from lenggen.tasks.base import SPLITS


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def prepared(data_dir):
    return dataset.prepare(FakeCopy(), data_dir)


def _files(directory):
    return {p.name: os.stat(p).st_mtime_ns for p in directory.iterdir()}


def test_directory_is_named_by_task_options_and_version(prepared, data_dir):
    # The hash is of the options as sorted, compact JSON, computed here independently.
    digest = hashlib.sha256(
        b'{"per_length":3,"seed":0}|format=' + dataset.FORMAT_VERSION.encode()
    ).hexdigest()[:8]
    assert dataset.config_name(FakeCopy()) == f"fake_copy-{digest}"

    class Reversed(FakeCopy):
        def options(self):  # same options, other insertion order: the same dataset
            return dict(reversed(super().options().items()))

    assert dataset.config_name(Reversed()) == f"fake_copy-{digest}"
    assert dataset.config_name(FakeCopy(seed=1)) != f"fake_copy-{digest}"
    assert prepared.directory == data_dir / "lenggen_task" / f"fake_copy-{digest}" / "1.0.0"
    assert dataset.FORMAT_VERSION in dataset.FORMAT_RELEASE_NOTES


def test_a_new_task_version_gets_its_own_directory(prepared, data_dir):
    class Regenerated(FakeCopy):
        version = "1.1.0"

    bumped = dataset.prepare(Regenerated(), data_dir)
    assert bumped.directory == prepared.directory.parent / "1.1.0"
    assert prepared.directory.exists()  # the old version is left alone


def test_records_round_trip_to_the_task_examples(prepared):
    task = FakeCopy()
    tokenizer = Tokenizer.from_task(task)
    assert prepared.tokenizer == tokenizer
    for split in SPLITS:
        examples = list(task.examples(split))
        source = prepared.splits[split]
        assert len(source) == len(examples) == 3 * len(task.lengths(split))
        for index, example in enumerate(examples):
            record = source[index]  # stored in task order: shuffling is disabled
            assert record["source"].decode() == example.source
            assert record["target"].decode() == example.target
            expected = tokenizer.encode(example.source) + tokenizer.encode(example.target) + [1]
            assert record["tokens"].dtype == np.int32
            assert record["tokens"].tolist() == expected
            assert record["source_length"] == len(tokenizer.encode(example.source))
            assert record["length"] == example.length


def test_a_hand_encoded_record(prepared):
    # The first train example with per_length=3, seed=0 is "c [SEP]" -> "c":
    # ids c=5, [SEP]=2, EOS=1.
    record = prepared.splits["train"][0]
    assert record["source"] == b"c [SEP]" and record["target"] == b"c"
    assert record["tokens"].tolist() == [5, 2, 5, 1]
    assert (record["source_length"], record["length"]) == (2, 1)


def test_max_sequence_length_is_stored_and_matches_a_scan(prepared):
    # Length L: L words + [SEP] + L words + EOS = 2L + 2; train longest L=3, test L=5.
    assert prepared.max_sequence_length("train") == 8
    assert prepared.max_sequence_length("validation") == 8
    assert prepared.max_sequence_length("test") == 12
    for split in SPLITS:
        assert prepared.max_sequence_length(split) == loader.sequence_length(prepared.splits[split])
    with pytest.raises(dataset.DatasetError, match="Unknown split 'dev'; expected one of"):
        prepared.max_sequence_length("dev")


def test_reopening_does_not_regenerate(prepared, data_dir, monkeypatch):
    before = _files(prepared.directory)

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a prepared dataset")

    monkeypatch.setattr(dataset.LenggenTask, "_generate_examples", fail)
    again = dataset.prepare(FakeCopy(), data_dir)
    assert again.directory == prepared.directory
    assert _files(prepared.directory) == before
    stored, fresh = again.splits["test"][5], prepared.splits["test"][5]
    assert stored["tokens"].tolist() == fresh["tokens"].tolist()
    assert again.max_sequence_length("test") == 12  # read back from metadata.json


def test_other_options_get_another_directory(prepared, data_dir):
    other = dataset.prepare(FakeCopy(per_length=2), data_dir)
    assert other.directory != prepared.directory
    assert other.directory.parent.name.startswith("fake_copy-")
    assert len(other.splits["train"]) == 6 and len(prepared.splits["train"]) == 9


def test_a_task_changed_without_a_version_bump_is_refused(prepared, data_dir):
    class Changed(FakeCopy):
        def examples(self, split):  # same name and options, other examples
            for example in super().examples(split):
                yield type(example)(example.source, example.target, example.length + 1)

    class MoreWords(FakeCopy):
        def vocabulary(self):
            return super().vocabulary() + ("e",)

    with pytest.raises(dataset.DatasetError, match="changed without a version bump"):
        dataset.prepare(MoreWords(), data_dir)

    class Reordered(FakeCopy):
        def examples(self, split):
            yield from reversed(list(super().examples(split)))

    with pytest.raises(dataset.DatasetError, match=r"Split 'train' .* starts with 'c \[SEP\]'"):
        dataset.prepare(Reordered(), data_dir)
    with pytest.raises(dataset.DatasetError, match="changed without a version bump"):
        dataset.prepare(Changed(), data_dir)


def test_options_must_be_json(data_dir):
    class Odd(FakeCopy):
        def options(self):
            return {"per_length": 3, "when": object()}

    with pytest.raises(dataset.DatasetError, match="cannot name a dataset"):
        dataset.prepare(Odd(), data_dir)


def test_losing_a_preparation_race_reads_the_winners_files(tmp_path, monkeypatch):
    # Another process finishes the same dataset while this one is generating: this one's rename
    # then fails on the non-empty directory, and prepare opens the winner's files. (Only where
    # prepare holds no lock, as on object stores: a local lock makes the other process wait.)
    monkeypatch.setattr(dataset, "_build_lock", lambda *_: contextlib.nullcontext(False))
    original = dataset.LenggenTask._download_and_prepare
    raced = []

    def racing(self, *args, **kwargs):
        if not raced:
            raced.append("started")
            raced.append(dataset.prepare(FakeCopy(), tmp_path))  # the other process wins
        return original(self, *args, **kwargs)

    monkeypatch.setattr(dataset.LenggenTask, "_download_and_prepare", racing)
    prepared = dataset.prepare(FakeCopy(), tmp_path)
    assert prepared.directory == raced[1].directory
    assert len(prepared.splits["test"]) == 6
    leftovers = [p.name for p in prepared.directory.parent.iterdir()]
    assert leftovers == ["1.0.0"]  # the loser's temporary directory is gone


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path):
    def files(task, where):
        directory = dataset.prepare(task, tmp_path / where).directory
        return {p.name: p.read_bytes() for p in directory.iterdir() if ".array_record" in p.name}

    first = files(FakeCopy(), "a")
    assert len(first) == 3  # one file per split
    assert files(FakeCopy(), "b") == first
    assert files(FakeCopy(seed=1), "c") != first
