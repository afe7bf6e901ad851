"""lenggen.rundir.storage on a local disk: atomic replacement, file modes that follow the umask,
and paths it refuses before anything is created."""

import os
import stat

import pytest

from lenggen import rundir
from lenggen.rundir import storage


@pytest.fixture
def umask():
    """Sets the process umask for one test, restoring the old one after."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_every_run_file_gets_the_mode_the_umask_gives(tmp_path, umask, mask, expected):
    umask(mask)
    run_dir = rundir.RunDir(tmp_path / "run")
    run_dir.write_json(rundir.CONFIG_FILE, {"seed": 1})
    run_dir.write_json(rundir.RESULTS_FILE, {"step": 3})
    run_dir.write_json(rundir.CHECKSUMS_FILE, {"best": {}})
    run_dir.write_lines(rundir.SAMPLES_FILE, ['{"a": 1}\n'])
    run_dir.append_event({"event": "train", "step": 1})
    for name in (
        rundir.CONFIG_FILE,
        rundir.RESULTS_FILE,
        rundir.CHECKSUMS_FILE,
        rundir.SAMPLES_FILE,
        rundir.METRICS_FILE,
    ):
        assert _mode(run_dir.file(name)) == expected, name


def test_the_plot_follows_the_umask_too(tmp_path, umask):
    from lenggen import results

    umask(0o022)
    payload = {
        "train_max_length": 2,
        "splits": {
            "test": {
                "overall": 0.5,
                "by_length": {"2": {"exact_match": 1.0, "n": 1}, "3": {"exact_match": 0.0, "n": 1}},
            }
        },
    }
    path = tmp_path / rundir.PLOT_FILE
    results.plot_accuracy_vs_length(payload, str(path), title="t")
    assert _mode(path) == 0o644 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    storage.write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        storage.write_json(path, {"a": object()})
    assert storage.read_json(path) == {"a": 1}
    assert os.listdir(tmp_path) == ["results.json"]


def test_write_bytes_replaces_the_whole_file(tmp_path):
    path = tmp_path / "sub" / "samples.jsonl"
    storage.write_lines(path, ["1\n", "2\n", "3\n"])
    storage.write_lines(path, ["4\n"])
    assert path.read_text() == "4\n" and sorted(os.listdir(path.parent)) == ["samples.jsonl"]


@pytest.mark.parametrize("path", ["s3://bucket/run", "hdfs://namenode/run", "file://x"])
def test_an_unsupported_scheme_is_refused_with_one_line_and_creates_nothing(
    tmp_path, monkeypatch, path
):
    monkeypatch.chdir(tmp_path)
    scheme = path.split("://")[0]
    with pytest.raises(rundir.StorageError) as refused:
        storage.check_reachable(path)
    assert str(refused.value) == (
        f"{path}: unsupported storage scheme {scheme!r}; use a local path or gs://<bucket>/<path>."
    )
    with pytest.raises(rundir.StorageError):
        rundir.RunDir(path)
    assert os.listdir(tmp_path) == []


def test_a_gcs_path_needs_a_bucket():
    with pytest.raises(rundir.StorageError, match="gs:///run: expected gs://<bucket>/<path>"):
        storage.resolve("gs:///run")


def test_local_paths_are_made_absolute_and_user_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert os.fspath(storage.resolve("~/runs/a")) == f"{tmp_path}/runs/a"
    assert os.fspath(storage.resolve("runs/b")) == f"{tmp_path}/runs/b"
    assert os.fspath(storage.resolve("gs://b/x/y")) == "gs://b/x/y"
