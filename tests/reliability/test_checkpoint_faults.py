"""Damaged checkpoints and interrupted writes: detected, reported, never used or left half-written.

- A truncated, zeroed or silently altered newest checkpoint is detected (Orbax's read errors, or
  the checksum recorded at save time) and the run falls back to the next older one, saying so.
- When no checkpoint restores, one clear error names the workdir, and nothing is moved.
- A save that a crash cut short is never listed as a step, and is removed on restart.
- results.json, samples.jsonl, the plot and config.json are replaced atomically.
"""

import hashlib
import json
import os
import shutil
import struct

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
        "params": {"w": jnp.full((4, 6), value, jnp.float32),
                   "b": jnp.arange(8, dtype=jnp.bfloat16) * value},
    }
    if mesh is not None:  # w split over the mesh's data axis, the rest replicated
        shardings = {"step": NamedSharding(mesh, P()),
                     "params": {"w": NamedSharding(mesh, P("data")),
                                "b": NamedSharding(mesh, P())}}
        state = jax.device_put(state, shardings)
    return state


def _abstract(state: dict) -> dict:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        state)


def _files(directory: str) -> list[str]:
    return sorted(os.path.join(root, name) for root, _, names in os.walk(directory)
                  for name in names)


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
    tree = {"a": jnp.array([1.0, 2.0], jnp.float32), "b": jnp.array([1.0], jnp.bfloat16),
            "c": jnp.array([[-1, 2]], jnp.int32)}
    assert checkpoint.state_checksum(tree) == [
        _sha256("float32[2]", struct.pack("<2f", 1.0, 2.0)),
        _sha256("bfloat16[1]", bytes([0x80, 0x3F])),  # bf16 1.0 = 0x3F80
        _sha256("int32[1, 2]", struct.pack("<2i", -1, 2)),
    ]
    # One flipped bit (the lowest of the mantissa) changes it.
    flipped = dict(tree, a=jnp.array([np.nextafter(np.float32(1), np.float32(2)), 2.0]))
    assert checkpoint.state_checksum(flipped)[0] == _sha256(
        "float32[2]", struct.pack("<2I", 0x3F800001, 0x40000000))
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
    raw = ocp.CheckpointManager(str(tmp_path / "other"), options=ocp.CheckpointManagerOptions(
        create=True))
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
    assert ("checkpoints/2 does not match the checksum recorded when it was saved (differing "
            "arrays: ['params']['w'])") in reason
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
        tmp_path, data_dir, reference, capsys):
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


def test_a_crash_while_writing_results_leaves_the_previous_files(tmp_path, data_dir, reference,
                                                                 monkeypatch):
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
    assert loop.evaluate(experiment, checkpoints) == expected_payload
    checkpoints.close()
    with open(os.path.join(run, workdir.RESULTS_FILE)) as handle:
        assert json.load(handle) == json.loads(json.dumps(expected_payload))


def test_a_crash_while_recording_the_config_leaves_the_previous_one(tmp_path, data_dir,
                                                                    monkeypatch):
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
    records = [{"event": "train", "step": 2}, {"event": "validation", "step": 2},
               {"event": "train", "step": 3}, {"event": "preempted", "step": 3},
               {"event": "validation", "step": 4}]
    (tmp_path / workdir.METRICS_FILE).write_text(
        "".join(results.json_line(r) for r in records) + '{"event": "train", "st')
    workdir.trim_metrics(str(tmp_path), 2)  # resuming at step 2 replays steps 3 and 4
    kept = [json.loads(line) for line in (tmp_path / workdir.METRICS_FILE).open()]
    assert kept == records[:2] + [records[3]]
