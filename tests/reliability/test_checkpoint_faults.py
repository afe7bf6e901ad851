"""Damaged checkpoints and interrupted writes: detected, reported, never used or left half-written.

- A truncated, zeroed or silently altered newest checkpoint is detected (Orbax's read errors, or
  the checksum recorded at save time) and the run falls back to the next older one, saying so.
- When no checkpoint restores, one clear error names the workdir, and nothing is moved.
- A save that a crash cut short is never listed as a step, and is removed on restart.
- results.json, samples.jsonl, the plot and config.json are replaced atomically.
"""

import contextlib
import errno
import hashlib
import json
import os
import shutil
import struct
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lenggen import checkpoint, results, sharding, workdir
from lenggen.train import loop
from tests.reliability import runs


def _state(value: float, mesh=None) -> dict:
    """A small train-state-like tree: f32 and bf16 leaves and an int32 counter."""
    state = {
        "step": jnp.asarray(int(value), jnp.int32),
        "params": {
            "w": jnp.full((4, 6), value, jnp.float32),
            "b": jnp.arange(8, dtype=jnp.bfloat16) * value,
        },
    }
    if mesh is not None:  # w split over the mesh's data axis, the rest replicated
        shardings = {
            "step": NamedSharding(mesh, P()),
            "params": {"w": NamedSharding(mesh, P("data")), "b": NamedSharding(mesh, P())},
        }
        state = jax.device_put(state, shardings)
    return state


def _abstract(state: dict) -> dict:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )


def _files(directory: str) -> list[str]:
    return sorted(
        os.path.join(root, name) for root, _, names in os.walk(directory) for name in names
    )


def _saved(tmp_path, *values: float) -> checkpoint.Checkpoints:
    checkpoints = checkpoint.Checkpoints(str(tmp_path), keep=5)
    for step, value in enumerate(values, start=1):
        checkpoints.save(step, _state(value))
    checkpoints.wait()
    return checkpoints


def _sha256(header: str, data: bytes) -> str:
    return hashlib.sha256(header.encode() + data).hexdigest()


def test_checksum_by_hand():
    # The hashed message: dtype name, shape as a list, then the little-endian bytes in C order.
    tree = {
        "a": jnp.array([1.0, 2.0], jnp.float32),
        "b": jnp.array([1.0], jnp.bfloat16),
        "c": jnp.array([[-1, 2]], jnp.int32),
    }
    assert checkpoint.state_checksum(tree) == [
        _sha256("float32[2]", struct.pack("<2f", 1.0, 2.0)),
        _sha256("bfloat16[1]", bytes([0x80, 0x3F])),  # bf16 1.0 = 0x3F80
        _sha256("int32[1, 2]", struct.pack("<2i", -1, 2)),
    ]
    # One flipped bit (the lowest of the mantissa) changes it.
    flipped = dict(tree, a=jnp.array([np.nextafter(np.float32(1), np.float32(2)), 2.0]))
    assert checkpoint.state_checksum(flipped)[0] == _sha256(
        "float32[2]", struct.pack("<2I", 0x3F800001, 0x40000000)
    )
    # Swapped values, which a per-array sum cannot see, and a reshape change it too.
    swapped = dict(tree, a=jnp.array([2.0, 1.0], jnp.float32))
    reshaped = dict(tree, c=jnp.array([[-1], [2]], jnp.int32))
    assert checkpoint.state_checksum(swapped)[0] != checkpoint.state_checksum(tree)[0]
    assert checkpoint.state_checksum(reshaped)[2] != checkpoint.state_checksum(tree)[2]


def test_checksum_does_not_depend_on_the_sharding():
    mesh = sharding.make_mesh((4, 1))
    assert checkpoint.state_checksum(_state(1.5, mesh)) == checkpoint.state_checksum(_state(1.5))


@pytest.mark.parametrize("damage", ["truncate", "zero"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    checkpoints = _saved(tmp_path, 1.0, 2.0, 3.0)
    for path in _files(str(tmp_path / "checkpoints" / "3" / "default")):
        size = os.path.getsize(path)
        with open(path, "r+b") as handle:
            if damage == "truncate":
                handle.truncate(size // 2)
            else:
                handle.write(b"\0" * size)
    restored = checkpoints.restore_newest(_abstract(_state(0.0)))
    assert restored.step == 2 and [s for s, _ in restored.skipped] == [3]
    jax.tree.map(np.testing.assert_array_equal, restored.state, _state(2.0))
    # The damaged step is kept for inspection, out of the manager's way.
    [moved] = restored.moved_to
    assert moved.startswith(str(tmp_path / "corrupt" / "checkpoints-3-")) and _files(moved)
    assert checkpoints.all_steps() == [1, 2]
    checkpoints.close()


def test_a_silently_altered_checkpoint_fails_its_checksum(tmp_path):
    checkpoints = _saved(tmp_path, 1.0, 2.0)
    # Bit rot in compressed array data can restore without any error from Orbax: stand in
    # for it with a valid checkpoint of step 2 whose params differ by one bit.
    altered = _state(2.0)
    one_bit_up = np.nextafter(np.float32(2), np.float32(3))
    altered["params"]["w"] = altered["params"]["w"].at[1, 2].set(one_bit_up)
    raw = ocp.CheckpointManager(
        str(tmp_path / "other"), options=ocp.CheckpointManagerOptions(create=True)
    )
    raw.save(2, args=ocp.args.StandardSave(altered))
    raw.wait_until_finished()
    raw.close()
    shutil.rmtree(tmp_path / "checkpoints" / "2")
    os.replace(tmp_path / "other" / "2", tmp_path / "checkpoints" / "2")
    # Orbax alone restores it without complaint.
    reader = ocp.CheckpointManager(str(tmp_path / "checkpoints"))
    read = reader.restore(2, args=ocp.args.StandardRestore(_abstract(_state(0.0))))
    reader.close()
    np.testing.assert_array_equal(read["params"]["w"], altered["params"]["w"])

    restored = checkpoints.restore_newest(_abstract(_state(0.0)))
    assert restored.step == 1
    [(step, reason)] = restored.skipped
    assert step == 2
    assert (
        "checkpoints/2 does not match the checksum recorded when it was saved (differing "
        "arrays: ['params']['w'])"
    ) in reason
    checkpoints.close()


def test_no_restorable_checkpoint_names_the_workdir_and_moves_nothing(tmp_path):
    checkpoints = _saved(tmp_path, 1.0, 2.0)
    for path in _files(str(tmp_path / "checkpoints")):
        if os.sep + "default" + os.sep in path:
            open(path, "wb").close()
    with pytest.raises(checkpoint.CheckpointError) as error:
        checkpoints.restore_newest(_abstract(_state(0.0)))
    message = str(error.value)
    expected = f"No checkpoint in {tmp_path}/checkpoints can be restored (workdir {tmp_path})"
    assert expected in message
    assert "step 2: " in message and "step 1: " in message
    assert checkpoints.all_steps() == [1, 2] and not (tmp_path / "corrupt").exists()
    checkpoints.close()


def test_an_unfinished_save_is_never_listed_and_is_removed_on_restart(tmp_path):
    _saved(tmp_path, 1.0, 2.0).close()
    # What a save killed part-way leaves (see test_interruptions.py for a real kill).
    unfinished = tmp_path / "checkpoints" / "3.orbax-checkpoint-tmp"
    shutil.copytree(tmp_path / "checkpoints" / "2", unfinished)
    for path in _files(str(unfinished))[::2]:
        os.truncate(path, 0)
    checkpoints = checkpoint.Checkpoints(str(tmp_path), keep=5)
    assert checkpoints.removed_unfinished == ["checkpoints/3.orbax-checkpoint-tmp"]
    assert not unfinished.exists() and checkpoints.latest_step() == 2
    checkpoints.close()


def test_the_loop_falls_back_past_a_truncated_checkpoint_and_reports_it(
    tmp_path, data_dir, reference, capsys
):
    expected_workdir, _ = reference
    run = str(tmp_path / "run")
    shutil.copytree(expected_workdir, run)
    newest = runs.complete_steps(run)[-1]
    previous = runs.complete_steps(run)[-2]
    for path in _files(os.path.join(run, "checkpoints", str(newest))):
        os.truncate(path, os.path.getsize(path) // 2)

    loop.run(runs.config_for(data_dir), run, mode="train")
    out = capsys.readouterr().out
    assert f"Checkpoint of step {newest} cannot be restored (" in out
    assert f"and fell back to step {previous}." in out
    assert f"Resumed from step {previous} in {run}." in out
    [event] = runs.events(run, "checkpoint_fallback")
    assert event["step"] == newest and event["restored_step"] == previous
    assert os.path.isdir(event["moved_to"]) and "corrupt" in event["moved_to"]
    # Retrained to the same end: the same state bit for bit, and one copy of each event.
    runs.assert_same_state(run, expected_workdir)
    assert runs.training_curve(run) == runs.training_curve(expected_workdir)


class _CrashAt:
    """os.fsync that fails on its `n`th call: a crash after a temporary file was written and
    before it replaced the real one."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.calls == self.n:
            raise OSError("simulated crash while writing")


def test_a_crash_while_writing_results_leaves_the_previous_files(
    tmp_path, data_dir, reference, monkeypatch
):
    expected_workdir, expected_payload = reference
    run = str(tmp_path / "run")
    shutil.copytree(expected_workdir, run)
    experiment = loop.Experiment(runs.config_for(data_dir), run)
    checkpoints = checkpoint.Checkpoints(run, keep=2)
    names = (workdir.RESULTS_FILE, workdir.SAMPLES_FILE, workdir.PLOT_FILE)
    # results.json then samples.jsonl (each fsynced before its rename), then the plot.
    for crash, damaged in ((1, 0), (2, 1), (None, 2)):
        for name in names:
            with open(os.path.join(run, name), "w") as handle:
                handle.write(f"previous {name}\n")
        if crash is not None:
            monkeypatch.setattr(os, "fsync", _CrashAt(crash))
        else:

            def broken_plot(payload, path, title):
                with open(path, "w") as handle:
                    handle.write("half a png")
                raise OSError("simulated crash while plotting")

            monkeypatch.setattr(results, "plot_accuracy_vs_length", broken_plot)
        with pytest.raises(OSError, match="simulated crash"):
            loop.evaluate(experiment, checkpoints)
        monkeypatch.undo()
        for index, name in enumerate(names):
            with open(os.path.join(run, name)) as handle:
                content = handle.read()
            if index < damaged:
                assert content != f"previous {name}\n"  # written whole before the crash
            else:
                assert content == f"previous {name}\n", name
    assert runs.scores(loop.evaluate(experiment, checkpoints)) == runs.scores(expected_payload)
    checkpoints.close()
    with open(os.path.join(run, workdir.RESULTS_FILE)) as handle:
        assert runs.scores(json.load(handle)) == json.loads(
            json.dumps(runs.scores(expected_payload))
        )


def test_a_crash_while_recording_the_config_leaves_the_previous_one(
    tmp_path, data_dir, monkeypatch
):
    workdir.claim(str(tmp_path), runs.config_for(data_dir))
    before = (tmp_path / workdir.CONFIG_FILE).read_text()
    other = runs.config_for(data_dir)
    other.eval.batch_size = 32  # not a training key: the same experiment, recorded anew
    monkeypatch.setattr(os, "fsync", _CrashAt(1))
    with pytest.raises(OSError, match="simulated crash"):
        workdir.claim(str(tmp_path), other)
    monkeypatch.undo()
    assert (tmp_path / workdir.CONFIG_FILE).read_text() == before
    workdir.claim(str(tmp_path), other)
    assert json.loads((tmp_path / workdir.CONFIG_FILE).read_text())["eval"]["batch_size"] == 32


def test_resuming_trims_replayed_events_and_a_line_cut_short(tmp_path):
    records = [
        {"event": "train", "step": 2},
        {"event": "validation", "step": 2},
        {"event": "train", "step": 3},
        {"event": "preempted", "step": 3},
        {"event": "validation", "step": 4},
    ]
    (tmp_path / workdir.METRICS_FILE).write_text(
        "".join(results.json_line(r) for r in records) + '{"event": "train", "st'
    )
    workdir.trim_metrics(str(tmp_path), 2)  # resuming at step 2 replays steps 3 and 4
    kept = [json.loads(line) for line in (tmp_path / workdir.METRICS_FILE).open()]
    assert kept == records[:2] + [records[3]]


def _checksums_file(tmp_path) -> dict:
    return json.loads((tmp_path / checkpoint.CHECKSUMS_FILE).read_text())


def test_checksums_file_verifies_itself(tmp_path):
    _saved(tmp_path, 1.0, 2.0).close()
    recorded = _checksums_file(tmp_path)
    assert recorded["format"] == 2 and recorded["algorithm"] == "sha256"
    assert recorded["entries"]["checkpoints"]["2"] == checkpoint.state_checksum(_state(2.0))
    # Its digest covers the entries as sorted JSON.
    assert (
        recorded["digest"]
        == hashlib.sha256(json.dumps(recorded["entries"], sort_keys=True).encode()).hexdigest()
    )
    entries, problem = checkpoint.read_checksums(str(tmp_path / checkpoint.CHECKSUMS_FILE))
    assert (entries, problem) == (recorded["entries"], None)


@pytest.mark.parametrize(
    "damage, problem",
    [
        # One recorded digest altered (e.g. to match a tampered checkpoint): the file's own
        # digest no longer matches.
        (
            lambda r: r["entries"]["checkpoints"].update({"2": ["0" * 64] * 3}),
            "its own digest does not match its entries (the file was altered)",
        ),
        (lambda r: r.update(format=1), "it is not in format 2 (sha256 per array)"),
        (None, "it does not read (JSONDecodeError: "),
        ("delete", "it is missing"),
    ],
)
def test_a_damaged_checksums_file_is_set_aside_with_a_warning(tmp_path, damage, problem):
    _saved(tmp_path, 1.0, 2.0).close()
    path = tmp_path / checkpoint.CHECKSUMS_FILE
    if damage == "delete":
        path.unlink()
    elif damage is None:
        path.write_text(path.read_text()[:40])
    else:
        recorded = _checksums_file(tmp_path)
        damage(recorded)
        path.write_text(json.dumps(recorded))
    damaged = path.read_bytes() if path.exists() else None
    checkpoints = checkpoint.Checkpoints(str(tmp_path), keep=5)
    [warning] = checkpoints.warnings
    assert warning.startswith(f"Warning: {path} cannot be trusted: {problem}")
    assert warning.endswith(
        "The checkpoints already saved are restored unverified (Orbax's own "
        "checks only); new saves record their checksums anew."
    )
    if damaged is not None:  # kept for inspection, out of the way
        [moved] = (tmp_path / "corrupt").iterdir()
        assert f"(moved to {moved})" in warning and moved.read_bytes() == damaged
    assert not path.exists()
    restored = checkpoints.restore_newest(_abstract(_state(0.0)))
    assert restored.step == 2 and not restored.skipped
    # The next save starts a new, valid file.
    checkpoints.save(3, _state(3.0))
    checkpoints.wait()
    assert checkpoint.read_checksums(str(path)) == (
        {"checkpoints": {"3": checkpoint.state_checksum(_state(3.0))}},
        None,
    )
    checkpoints.close()
    assert checkpoint.Checkpoints(str(tmp_path), keep=5).warnings == []


def test_a_step_without_a_recorded_checksum_is_not_restored(tmp_path):
    checkpoints = _saved(tmp_path, 1.0, 2.0)
    recorded = _checksums_file(tmp_path)["entries"]
    del recorded["checkpoints"]["2"]
    checkpoint.write_checksums(str(tmp_path / checkpoint.CHECKSUMS_FILE), recorded)
    checkpoints.close()
    checkpoints = checkpoint.Checkpoints(str(tmp_path), keep=5)
    restored = checkpoints.restore_newest(_abstract(_state(0.0)))
    assert restored.step == 1
    [(step, reason)] = restored.skipped
    assert step == 2 and "checkpoints/2 has no checksum in checksums.json" in reason
    checkpoints.close()


@contextlib.contextmanager
def _small_disk(path):
    """Mounts a 1 MiB tmpfs at `path` when this process may (root); yields whether it did."""
    path.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:  # lazily: Orbax's threads of a failed save may still hold it a moment
            subprocess.run(["umount", "-l", str(path)], check=True)


def _fill(path) -> None:
    """Takes every free byte of the filesystem holding `path`."""
    with open(os.path.join(path, "filler"), "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC


def test_a_full_disk_fails_at_the_failing_save_and_keeps_the_last_good_one(tmp_path):
    disk = tmp_path / "disk"
    with _small_disk(disk) as mounted:
        if not mounted:
            pytest.skip("mounting a tmpfs needs root (the in-loop test below injects ENOSPC)")
        checkpoints = checkpoint.Checkpoints(str(disk), keep=2)
        for step in (1, 2):
            checkpoints.save(step, _state(float(step)))
            checkpoints.wait()
        _fill(disk)
        with pytest.raises(checkpoint.CheckpointSaveError) as error:
            checkpoints.save(3, _state(3.0))
            checkpoints.wait()
        message = str(error.value)
        assert message.startswith(f"Saving step 3 failed: {disk}/")
        assert message.endswith(
            ": No space left on device. The newest complete checkpoint, "
            "checkpoints/2, is intact; free space (or fix the disk) and run "
            "the same command to resume."
        )
        checkpoints.close()  # the failure is not raised again
        os.remove(disk / "filler")
        reopened = checkpoint.Checkpoints(str(disk), keep=2)
        restored = reopened.restore_newest(_abstract(_state(0.0)))
        assert restored.step == 2 and not restored.skipped
        jax.tree.map(np.testing.assert_array_equal, restored.state, _state(2.0))
        assert reopened.all_steps() == [1, 2]
        reopened.close()


def test_a_failed_asynchronous_save_stops_the_loop_at_once(
    tmp_path, data_dir, reference, monkeypatch
):
    """The loop checks for a failed save before every step: a save that fails in Orbax's
    background thread (here: step 8's, which writes nothing and then reports TensorStore's
    error, as on a full disk) stops training before the next step, naming the path, and the
    steps saved before it stay restorable."""
    expected_workdir, _ = reference
    run = str(tmp_path / "run")
    real_save = ocp.CheckpointManager.save
    failed = []

    def save(self, step, *args, **kwargs):
        if step == 8 and str(self.directory).endswith("checkpoints"):
            failed.append(self)
            return True  # started; the failure shows in check_for_errors
        return real_save(self, step, *args, **kwargs)

    def check_for_errors(self):
        if self in failed:
            raise ValueError(
                'RESOURCE_EXHAUSTED: Error writing local file "w/.zarray": Failed '
                "to write 177 bytes to file 4: No space left on device "
                "[os_error_code='28']"
            )

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    monkeypatch.setattr(ocp.CheckpointManager, "check_for_errors", check_for_errors)
    with pytest.raises(checkpoint.CheckpointSaveError) as error:
        loop.run(runs.config_for(data_dir), run, mode="train")
    assert str(error.value) == (
        f"Saving step 8 failed: {run}/checkpoints/8: No space left on device. The newest "
        "complete checkpoint, checkpoints/4, is intact; free space (or fix the disk) and run "
        "the same command to resume."
    )
    assert runs.complete_steps(run) == [4]
    assert [e["step"] for e in runs.events(run, "train")][-1] == 8  # stopped at that save
    monkeypatch.undo()
    # The same command resumes from step 4 and ends as the uninterrupted run.
    loop.run(runs.config_for(data_dir), run, mode="train")
    runs.assert_same_state(run, expected_workdir)


def test_a_full_disk_on_the_command_line_is_one_line_and_status_74(tmp_path, data_dir):
    disk = tmp_path / "disk"
    with _small_disk(disk) as mounted:
        if not mounted:
            pytest.skip("mounting a tmpfs needs root (the in-loop test above injects ENOSPC)")
        subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
        run = runs.Main(str(disk / "run"), data_dir)
        deadline = time.monotonic() + 180
        while runs.complete_steps(run.workdir) != [4] and time.monotonic() < deadline:
            time.sleep(0.002)
        _fill(disk)
        status = run.finish()
        stderr = run.stderr()
        assert status == 74, stderr[-3000:]
        # One line, without Orbax's pages of logged errors.
        assert "Traceback" not in stderr and "ERROR" not in stderr, stderr[-3000:]
        [line] = [line for line in stderr.splitlines() if line.startswith("lenggen: ")]
        assert f"{disk}/run/" in line and "No space left on device" in line, line
        saved = runs.complete_steps(run.workdir)
        assert saved[0] == 4 and len(saved) <= 2  # a save that fails never looks finished
        os.remove(disk / "filler")
        checkpoints = checkpoint.Checkpoints(run.workdir, keep=2)
        restored = checkpoints.restore_newest(
            loop.Experiment(runs.config_for(data_dir), run.workdir).layout.restore_target()
        )
        assert restored.step == saved[-1] and not restored.skipped
        checkpoints.close()
