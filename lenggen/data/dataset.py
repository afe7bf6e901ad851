"""The TFDS builder: a task's examples, tokenized, stored as array_record files.

One `GeneratorBasedBuilder` serves every task: its BuilderConfig is made from the task's name and
options, so each (task, options) pair gets its own versioned directory

    <data_dir>/lenggen_task/<task>-<8 hex digits of the options' hash>/<task version>/

and preparing the same pair again reopens the files instead of regenerating them. The builder is
TensorFlow-free: `file_format='array_record'`, read with `builder.as_data_source(split)` (random
access, each record a dict of numpy values). `as_dataset` / `tfds.load` would need TensorFlow.

Records (one per example, in the order `task.examples(split)` yields them; shuffling is disabled
because the loader shuffles by epoch itself, see loader.TrainBatches):
  tokens         int32 [tokens]  source ids + target ids + EOS (no BOS, as in the paper)
  source_length  int    []       the number of prompt (source) tokens
  length         int    []       the length bucket the paper reports the example under
  source, target bytes           the example's text (utf-8)
The version directory's metadata.json records the task name, its options, the tokenizer's words
and each split's longest record, so `tfds.builder_from_directory(directory)` opens a dataset
without the task or this class.

Integrity: once built, the sha256 of every file of the version directory is recorded in its
`lenggen_files.json`; `prepare` verifies them whenever it opens the dataset, and a damaged file
is named and the dataset rebuilt (a damaged cache otherwise fails only when the bad chunk is
read, and every rerun the same way). A dataset written before this record existed gets it on
its next open (unverified that once).

Concurrency: tfds writes into `<config dir>/incomplete.XXXXXX_<version>/` (a random suffix per
process) and renames it onto the version directory when done, so readers never see a
half-written dataset. On a local disk, `prepare` holds an exclusive lock
(`<data dir>/lenggen_task/.<config name>.lock`, released by the OS if the process dies) while it
checks and builds, so a second process waits and then opens the first one's files; and under
that lock any `incomplete.*` directory is a build that was killed, and is removed (a gs:// data
dir is built and verified in its local staging copy, see `_prepare_on_gcs`, under the same
lock). Without the lock, several processes preparing the same dataset at once each generate their
own copy; the first rename wins, the others fail with FileExistsError on the now non-empty
directory, and `prepare` then drops their copy and opens the winner's. Nothing is corrupted, only
work repeated. With many hosts, prepare on process 0, wait at a barrier, then prepare everywhere
(the others then only open the files): renames on object stores such as GCS are not atomic.
"""

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from lenggen import quiet_logs
from lenggen.data.tokenizer import EOS_ID, Tokenizer
from lenggen.rundir import storage
from lenggen.tasks.base import SPLITS

# Two versions name a dataset. A task's own `version` (lenggen.tasks.base.Task) is the TFDS
# version directory: bump it when the task's generator would yield other examples for the same
# options. FORMAT_VERSION covers this module and the tokenizer (features, encoding) and is hashed
# into the config name with the options: bump it when the stored records would differ for every
# task. Either way an old directory is left alone and the new one generated next to it; `prepare`
# also refuses a stored dataset whose vocabulary or first records no longer match the task (the
# sign of a change made without a bump).
FORMAT_VERSION = "1.0.0"
FORMAT_RELEASE_NOTES = {
    "1.0.0": "Initial release: tokens, source_length, length, source, target; word-level "
    "vocabulary from the task; records in task order (shuffling disabled).",
}


# Where a gs:// data dir's datasets are read from (array_record needs local files).
DEFAULT_STAGING_DIR = "~/.cache/lenggen/gcs-staging"
FILES_RECORD = "lenggen_files.json"
_INCOMPLETE_PREFIX = "incomplete."


class DatasetError(ValueError):
    """Options that cannot name a dataset, or a stored dataset that no longer matches its task."""


def config_name(task) -> str:
    """`<task name>-<8 hex digits>`: the hash is of the task's options, sorted, as JSON, and of
    FORMAT_VERSION."""
    return f"{task.name}-{_options_hash(task.options())}"


def task_version(task) -> tfds.core.Version:
    """The TFDS version of `task`'s dataset: the task's own generator version."""
    return tfds.core.Version(getattr(task, "version", "1.0.0"))


def _options_json(options: Mapping) -> str:
    try:
        return json.dumps(dict(options), sort_keys=True, separators=(",", ":"))
    except TypeError as error:
        raise DatasetError(
            f"Task options {options!r} cannot name a dataset ({error}); expected JSON values "
            "(numbers, strings, booleans, lists, dicts)."
        ) from None


def _options_hash(options: Mapping) -> str:
    text = f"{_options_json(options)}|format={FORMAT_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:8]


class LenggenTask(tfds.core.GeneratorBasedBuilder):
    """The dataset of one task with one set of options (construct with `task=`)."""

    VERSION = tfds.core.Version("1.0.0")  # unused: every config carries its task's version

    def __init__(self, *, task, **kwargs):
        # The config must exist before super().__init__ picks the directory; the task itself is
        # only needed to generate.
        self._task = task
        config = tfds.core.BuilderConfig(
            name=config_name(task),
            version=task_version(task),
            release_notes=FORMAT_RELEASE_NOTES,
            description=f"Task {task.name!r} with options {_options_json(task.options())}.",
        )
        super().__init__(config=config, file_format="array_record", **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        tokenizer = Tokenizer.from_task(self._task)
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.builder_config.description,
            features=tfds.features.FeaturesDict(
                {
                    "tokens": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                    "source_length": tfds.features.Scalar(dtype=np.int32),
                    "length": tfds.features.Scalar(dtype=np.int32),
                    "source": tfds.features.Text(),
                    "target": tfds.features.Text(),
                }
            ),
            # The loader shuffles per epoch itself; stored order = task order, and the writer
            # skips the hash-and-sort pass shuffling needs.
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(
                task=self._task.name,
                options=json.loads(_options_json(self._task.options())),
                words=list(tokenizer.words),
                max_sequence_length={},
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download: the task generates its examples.
        tokenizer = Tokenizer.from_task(self._task)
        return {split: self._generate_examples(split, tokenizer) for split in SPLITS}

    def _generate_examples(self, split: str, tokenizer: Tokenizer):
        longest = 0
        for index, example in enumerate(self._task.examples(split)):
            record = encode_example(example, tokenizer)
            longest = max(longest, len(record["tokens"]))
            yield index, record
        # Saved with the dataset info once every split is written (metadata.json).
        self.info.metadata["max_sequence_length"][split] = longest


def encode_example(example, tokenizer: Tokenizer) -> dict:
    """The record of one `Example`: `tokens` = source ids + target ids + EOS."""
    source = tokenizer.encode(example.source)
    target = tokenizer.encode(example.target)
    if not source:
        # The first target token is predicted from the last prompt position: no prompt, no loss.
        raise DatasetError(f"Example {example!r} has an empty source; expected at least one word.")
    return {
        "tokens": np.asarray(source + target + [EOS_ID], dtype=np.int32),
        "source_length": np.int32(len(source)),
        "length": np.int32(example.length),
        "source": example.source,
        "target": example.target,
    }


@dataclasses.dataclass(frozen=True)
class PreparedTask:
    """A prepared dataset: its splits as random-access sources and the tokenizer it used.

    Attributes:
      splits: split name -> a random-access source; `splits[s][i]` is a dict of numpy values
        (`tokens` int32 [tokens], `source_length`, `length` int32 [], `source`, `target` bytes).
      tokenizer: the vocabulary the records were written with.
      directory: the version directory holding the files.
      longest: split name -> tokens in its longest record (written at preparation, in
        metadata.json, so no split has to be scanned to size the model's inputs).
      notes: what `prepare` repaired on the way (a damaged file rebuilt, a killed build
        removed), one line each, for the caller to show.
    """

    splits: Mapping[str, Sequence[dict]]
    tokenizer: Tokenizer
    directory: epath.Path
    longest: Mapping[str, int]
    notes: tuple[str, ...] = ()

    def max_sequence_length(self, split: str) -> int:
        """The number of tokens of the longest record of `split` (EOS included)."""
        if split not in self.longest:
            raise DatasetError(f"Unknown split {split!r}; expected one of {SPLITS}.")
        return self.longest[split]


def prepare(
    task, data_dir: str | os.PathLike, *, staging_dir: str | os.PathLike = DEFAULT_STAGING_DIR
) -> PreparedTask:
    """Generates `task`'s dataset under `data_dir` unless it is already there, then opens it.

    A gs:// `data_dir` is mirrored through a local `staging_dir` (see `_prepare_on_gcs`). An
    existing dataset whose files fail their recorded sha256 is rebuilt (see the module
    docstring); `PreparedTask.notes` says so.
    """
    with quiet_logs.tfds_preparation():  # TFDS's banner and warnings say nothing to act on.
        if storage.is_gcs(data_dir):
            return _prepare_on_gcs(task, os.fspath(data_dir), os.path.expanduser(staging_dir))
        return _prepare_local(task, data_dir)


def _prepare_on_gcs(task, data_dir: str, staging_dir: str) -> PreparedTask:
    """The dataset kept in gs://`data_dir`, read from a local copy.

    TFDS reads and writes its metadata through epath (gs:// works), but its array_record
    files are opened by array_record's C++ reader and writer, which take local paths only.
    So the version directory is generated (or downloaded) under
    `staging_dir/<bucket>/<path>/...` and opened there; a dataset generated here is uploaded
    with dataset_info.json last, the file TFDS takes as "prepared", so a reader never sees a
    partial upload as a dataset.
    """
    bucket, key = storage.bucket_and_key(data_dir)
    local_root = os.path.join(staging_dir, bucket, key)
    local = LenggenTask(task=task, data_dir=local_root).data_path
    relative = os.path.relpath(os.fspath(local), local_root)
    remote = f"{data_dir.rstrip('/')}/{relative}"
    filesystem = storage.gcs_filesystem()
    marker = "dataset_info.json"
    if filesystem.exists(f"{remote}/{marker}"):
        if not (local / marker).exists():
            partial = f"{local}.download-{os.getpid()}"
            filesystem.get(f"{remote}/", f"{partial}/", recursive=True)
            os.makedirs(os.path.dirname(os.fspath(local)), exist_ok=True)
            os.replace(partial, local)
        return _prepare_local(task, local_root)
    prepared = _prepare_local(task, local_root)
    names = sorted(os.listdir(local), key=lambda name: name == marker)  # marker last
    for name in names:
        filesystem.put(os.path.join(local, name), f"{remote}/{name}")
    return prepared


def _prepare_local(task, data_dir: str | os.PathLike) -> PreparedTask:
    """`prepare` on a local `data_dir`: under the build lock, verifies (or rebuilds) and opens."""
    notes = []
    with _build_lock(data_dir, task) as locked:
        version_dir = (
            epath.Path(data_dir) / "lenggen_task" / config_name(task) / str(task_version(task))
        )
        if locked:
            notes += _remove_killed_builds(version_dir.parent)
        damaged = _damaged_file(version_dir)
        if damaged is not None:
            notes.append(
                f"Dataset file {damaged} is damaged (its sha256 differs from the one "
                f"recorded when it was built): rebuilding {version_dir}."
            )
            shutil.rmtree(version_dir)
        builder = LenggenTask(task=task, data_dir=data_dir)
        if not builder.is_prepared():
            try:
                builder.download_and_prepare()
            except OSError:
                # Lost a race with another process preparing the same dataset (see the module
                # docstring): its rename came first, so read its files instead.
                if not builder.is_prepared():
                    raise
                builder = LenggenTask(task=task, data_dir=data_dir)
        if not (builder.data_path / FILES_RECORD).exists():
            _record_files(builder.data_path)
    tokenizer = Tokenizer.from_task(task)
    metadata = builder.info.metadata
    stored = tuple(metadata["words"])
    if stored != tokenizer.words:
        raise DatasetError(
            f"The dataset at {builder.data_path} was written with {len(stored)} words "
            f"{stored[:8]}..., but task {task.name!r} now has {tokenizer.vocab_size} "
            f"{tokenizer.words[:8]}...; the task changed without a version bump "
            f"(now {task_version(task)}): bump {type(task).__name__}.version or delete that "
            "directory."
        )
    splits = {split: builder.as_data_source(split) for split in SPLITS}
    _check_first_records(task, tokenizer, splits, builder.data_path)
    return PreparedTask(
        splits=splits,
        tokenizer=tokenizer,
        directory=builder.data_path,
        longest={s: int(n) for s, n in metadata["max_sequence_length"].items()},
        notes=tuple(notes),
    )


@contextlib.contextmanager
def _build_lock(data_dir, task) -> Iterator[bool]:
    """Holds an exclusive lock on `task`'s dataset while it is checked and built; yields whether
    it is held (only local disks: object stores have no such lock)."""
    root = epath.Path(data_dir)
    if "://" in str(data_dir):
        yield False
        return
    (root / "lenggen_task").mkdir(parents=True, exist_ok=True)
    with open(root / "lenggen_task" / f".{config_name(task)}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the OS if this process dies
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_killed_builds(config_dir: epath.Path) -> list[str]:
    """Removes the `incomplete.*` directories a killed build left (call under the lock)."""
    if not config_dir.exists():
        return []
    removed = []
    for entry in sorted(config_dir.iterdir()):
        if entry.name.startswith(_INCOMPLETE_PREFIX) and entry.is_dir():
            shutil.rmtree(entry)
            removed.append(f"Removed {entry}: a dataset build that was killed part-way.")
    return removed


def _file_digest(path: epath.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _record_files(version_dir: epath.Path) -> None:
    """Writes the sha256 of every file of a built dataset to its FILES_RECORD (atomically)."""
    files = {
        path.name: _file_digest(path)
        for path in sorted(version_dir.iterdir())
        if path.is_file() and path.name != FILES_RECORD
    }
    temporary = version_dir / f".{FILES_RECORD}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(dict(format=1, algorithm="sha256", files=files), indent=1))
    temporary.rename(version_dir / FILES_RECORD)


def _damaged_file(version_dir: epath.Path) -> epath.Path | None:
    """The first file of a built dataset that is missing or fails its recorded sha256; None
    when all verify, or when nothing is recorded (not built, or built before the record)."""
    record = version_dir / FILES_RECORD
    if not record.exists():
        return None
    try:
        files = json.loads(record.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return record
    for name, expected in sorted(files.items()):
        path = version_dir / name
        if not path.exists() or _file_digest(path) != expected:
            return path
    return None


def _check_first_records(task, tokenizer, splits, directory) -> None:
    """Raises when a stored split's first record differs from what the task yields now."""
    for split, source in splits.items():
        first = next(iter(task.examples(split)), None)
        if first is None or len(source) == 0:
            if (first is None) != (len(source) == 0):
                raise DatasetError(
                    f"Split {split!r} at {directory} has {len(source)} records but task "
                    f"{task.name!r} now yields {'none' if first is None else 'some'}; "
                    f"bump {type(task).__name__}.version (now {task_version(task)}) or delete "
                    "that directory."
                )
            continue
        expected = encode_example(first, tokenizer)
        stored = source[0]
        same = (
            stored["source"].decode() == first.source
            and stored["target"].decode() == first.target
            and np.array_equal(stored["tokens"], expected["tokens"])
            and stored["source_length"] == expected["source_length"]
            and stored["length"] == expected["length"]
        )
        if not same:
            raise DatasetError(
                f"Split {split!r} at {directory} starts with {stored['source'].decode()!r} -> "
                f"{stored['target'].decode()!r} (bucket {stored['length']}), but task "
                f"{task.name!r} now starts it with {first.source!r} -> {first.target!r} "
                f"(bucket {first.length}); the task changed without a version bump "
                f"(now {task_version(task)}): bump {type(task).__name__}.version or delete "
                "that directory."
            )
