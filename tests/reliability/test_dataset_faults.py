"""A damaged dataset cache is found when it is opened, named and rebuilt; a build that was killed
leaves nothing behind for long (the next prepare removes its temporary directory)."""

import hashlib
import json
import signal
import subprocess
import sys
import time

import pytest

from lenggen import tasks
from lenggen.data import dataset
from tests.reliability import runs, tiny_config

_OPTIONS = tiny_config.get_config().task.options.to_dict()


def _task(**options):
    return tasks.get("copy", **dict(_OPTIONS, **options))


def _files(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


@pytest.fixture
def built(tmp_path):
    prepared = dataset.prepare(_task(), tmp_path)
    assert prepared.notes == ()
    return prepared, _files(prepared.directory)


@pytest.mark.parametrize(
    "name, damage",
    [
        ("lenggen_task-train.array_record-00000-of-00001", "flip"),
        ("lenggen_task-test.array_record-00000-of-00001", "truncate"),
        ("dataset_info.json", "truncate"),
        ("metadata.json", "delete"),
    ],
)
def test_a_damaged_dataset_file_is_named_and_rebuilt(tmp_path, built, name, damage):
    prepared, files = built
    path = prepared.directory / name
    if damage == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 3] ^= 0x10
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:50])
    else:
        path.unlink()
    again = dataset.prepare(_task(), tmp_path)
    assert again.notes == (
        f"Dataset file {path} is damaged (its sha256 differs from the one recorded when it was "
        f"built): rebuilding {prepared.directory}.",
    )
    # Generation is deterministic: the rebuilt files are the first build's, byte for byte.
    assert _files(again.directory) == files
    assert [again.splits["train"][i]["target"] for i in range(3)] == [
        prepared.splits["train"][i]["target"] for i in range(3)
    ]
    assert dataset.prepare(_task(), tmp_path).notes == ()


def test_the_files_record_holds_each_files_sha256(built):
    prepared, files = built
    record = json.loads(files[dataset.FILES_RECORD])
    assert record["algorithm"] == "sha256"
    assert record["files"] == {
        name: hashlib.sha256(data).hexdigest()
        for name, data in files.items()
        if name != dataset.FILES_RECORD
    }
    assert len(record["files"]) == 6  # three splits, dataset_info, features, metadata


def test_a_killed_build_leaves_no_incomplete_directory(tmp_path):
    """A real build, killed with SIGKILL while tfds writes its temporary directory; the next
    prepare of that dataset removes what it left, then builds it."""
    options = dict(num_train=5000)  # a few seconds to build: time to kill it part-way
    script = (
        "import sys; from lenggen.data import dataset; from tests.reliability import "
        "test_dataset_faults as t; dataset.prepare(t._task(num_train=5000), sys.argv[1])"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=runs.REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    config_dir = tmp_path / "lenggen_task" / dataset.config_name(_task(**options))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if config_dir.exists() and any(
            p.name.startswith("incomplete.") for p in config_dir.iterdir()
        ):
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    [left] = [p for p in config_dir.iterdir() if p.name.startswith("incomplete.")]
    prepared = dataset.prepare(_task(**options), tmp_path)
    assert prepared.notes == (f"Removed {left}: a dataset build that was killed part-way.",)
    assert [p.name for p in config_dir.iterdir()] == ["1.0.0"]
    assert len(prepared.splits["train"]) == 5000
