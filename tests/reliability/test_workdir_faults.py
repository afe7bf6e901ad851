"""What a workdir may and may not be reused for: evaluation only under the run's own config, no
checkpoints without their config.json, config.json written only once a run starts, --overwrite
that really starts over, damaged metrics.jsonl lines named, and a resume on another device
count said out loud.

In-process (`loop.run`); tests/reliability/test_bad_input.py runs the same refusals through the
command line for their exit status and one-line message.
"""

import json
import os
import shutil

import pytest

from lenggen import workdir as workdir_lib
from lenggen.rundir import files as rundir_files
from lenggen.train import loop
from tests.reliability import runs


def _copy(reference, tmp_path) -> str:
    run = str(tmp_path / "run")
    shutil.copytree(reference[0], run)
    return run


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def _tree(directory: str) -> dict[str, bytes]:
    """Every file under `directory` and its bytes: equal trees mean nothing was written."""
    found = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, directory)] = handle.read()
    return found


@pytest.mark.parametrize(
    "edit, shown",
    [
        (
            lambda c: setattr(c.model.pe, "name", "alibi"),
            "model.pe.name (saved 'nope', now 'alibi')",
        ),
        (lambda c: setattr(c, "seed", 4), "seed (saved 3, now 4)"),
        (
            lambda c: setattr(c.train, "learning_rate", 1e-3),
            "train.learning_rate (saved 0.003, now 0.001)",
        ),
    ],
)
def test_evaluate_refuses_another_config_and_leaves_the_results(
    tmp_path, data_dir, reference, edit, shown
):
    run = _copy(reference, tmp_path)
    before = _tree(run)
    config = runs.config_for(data_dir)
    edit(config)
    with pytest.raises(workdir_lib.WorkdirConflictError) as error:
        loop.run(config, run, mode="evaluate")
    assert str(error.value) == (
        f"Workdir {run} trained another config: {shown}. --mode=evaluate scores a run only "
        "under the config it trained with (it may change eval.*, mesh.* and data.*): drop "
        "those overrides."
    )
    assert _tree(run) == before  # results.json (labelled nope, seed 3) untouched


def test_evaluate_may_change_evaluation_keys(tmp_path, data_dir, reference):
    run = _copy(reference, tmp_path)
    config = runs.config_for(data_dir)
    config.eval.batch_size = 8  # another batching of the same examples: the same verdicts
    config.mesh.shape = (4, 1)
    payload = loop.run(config, run, mode="evaluate")
    # The same scores; provenance says where each evaluation ran (another mesh here).
    assert runs.scores(payload) == runs.scores(reference[1])


def test_evaluation_keys_are_one_list(monkeypatch):
    """A key listed in EVALUATION_KEYS may differ for --mode=evaluate, never for a resume."""
    saved = {"model": {"pe": {"name": "rotary", "rotary": {"scaling": "none", "base": 10.0}}}}
    current = {"model": {"pe": {"name": "rotary", "rotary": {"scaling": "yarn", "base": 10.0}}}}
    assert workdir_lib.differing_keys(saved, current, evaluating=True) == []
    assert workdir_lib.differing_keys(saved, current) == ["model.pe.rotary.scaling"]
    # The list lives in lenggen/rundir/files.py (lenggen.workdir re-exports it).
    monkeypatch.setattr(rundir_files, "EVALUATION_KEYS", ())
    assert workdir_lib.differing_keys(saved, current, evaluating=True) == [
        "model.pe.rotary.scaling"
    ]
    # A prefix match is by whole key parts: "model.pe.rotary.scaling_factor" is another key.
    monkeypatch.setattr(rundir_files, "EVALUATION_KEYS", ("model.pe.rotary.scaling",))
    saved["model"]["pe"]["rotary"]["scaling_factor"] = 1
    assert workdir_lib.differing_keys(saved, current, evaluating=True) == [
        "model.pe.rotary.scaling_factor"
    ]


def test_the_evaluation_keys_are_rotarys_context_extension():
    assert rundir_files.EVALUATION_KEYS == tuple(
        f"model.pe.rotary.{key}"
        for key in ("scaling", "scaling_factor", "original_max_position", "beta_fast", "beta_slow")
    )


def _rotary_config(data_dir, **scaling):
    config = runs.config_for(data_dir, steps=8)
    config.model.pe.name = "rotary"  # d_kv 16: 4 rotated dims
    config.model.pe.rotary.update(scaling)
    return config


YARN = dict(scaling="yarn", scaling_factor=2.0, original_max_position=16)


def test_rotary_scaling_applies_at_evaluation_to_a_run_trained_without_it(tmp_path, data_dir):
    """Train rotary plainly; --mode=evaluate with only the scaling keys changed scores it with
    YaRN (results labelled rotary+yarn) and leaves config.json and the checkpoints as they
    were; any other change, or a resume with the scaling, is still refused."""
    run = str(tmp_path / "run")
    plain = loop.run(_rotary_config(data_dir), run)
    assert plain["pe"] == "rotary"
    config_json = _read(os.path.join(run, "config.json"))
    checkpoints = {k: v for k, v in _tree(run).items() if k.startswith(("checkpoints", "best"))}

    scaled = loop.run(_rotary_config(data_dir, **YARN), run, mode="evaluate")
    assert scaled["pe"] == "rotary+yarn" and scaled["step"] == plain["step"]
    assert _read_json(os.path.join(run, "results.json"))["pe"] == "rotary+yarn"
    assert _read(os.path.join(run, "config.json")) == config_json  # still the trained config
    assert {k: v for k, v in _tree(run).items() if k.startswith(("checkpoints", "best"))} == (
        checkpoints
    )
    # Evaluating plainly again gives back the plain scores.
    again = loop.run(_rotary_config(data_dir), run, mode="evaluate")
    assert runs.scores(again) == runs.scores(plain)

    before = _tree(run)
    other = _rotary_config(data_dir, **YARN)
    other.model.pe.rotary.base = 500.0
    with pytest.raises(workdir_lib.WorkdirConflictError, match=r"model.pe.rotary.base \(saved"):
        loop.run(other, run, mode="evaluate")
    # A resume must train what was trained: the scaling is a training key there.
    resumed = _rotary_config(data_dir, **YARN)
    resumed.train.num_steps = 12
    with pytest.raises(workdir_lib.WorkdirConflictError, match="model.pe.rotary.scaling "):
        loop.run(resumed, run, mode="train")
    assert _tree(run) == before


def _read_json(path: str):
    with open(path) as handle:
        return json.load(handle)


def test_checkpoints_without_config_are_refused_and_overwrite_moves_them_aside(
    tmp_path, data_dir, reference
):
    run = _copy(reference, tmp_path)
    os.remove(os.path.join(run, "config.json"))
    before = _tree(run)
    config = runs.config_for(data_dir)
    with pytest.raises(workdir_lib.WorkdirError) as error:
        loop.run(config, run, mode="train")
    assert str(error.value) == (
        f"Workdir {run} has checkpoints/ and best/ but no config.json, so nothing says which "
        "experiment they belong to. Put that run's config.json back, use another --workdir, "
        "or pass --overwrite to move them aside and start from scratch."
    )
    assert _tree(run) == before


def test_config_is_written_only_once_the_run_starts(tmp_path, data_dir, reference):
    run = _copy(reference, tmp_path)
    for step in runs.complete_steps(run):  # no checkpoint restores
        directory = os.path.join(run, "checkpoints", str(step))
        for root, _, names in os.walk(directory):
            for name in names:
                os.truncate(os.path.join(root, name), 0)
    recorded = _read(os.path.join(run, "config.json"))
    config = runs.config_for(data_dir)
    config.eval.batch_size = 8  # may change on resume: recorded once the run starts
    with pytest.raises(loop.checkpoint.CheckpointError, match="No checkpoint in .* can be "):
        loop.run(config, run, mode="train")
    assert _read(os.path.join(run, "config.json")) == recorded


def test_overwrite_with_the_same_config_starts_over(tmp_path, data_dir, capsys):
    run = str(tmp_path / "run")
    config = runs.config_for(data_dir, steps=4)
    loop.run(config, run, mode="train")
    first = runs.final_state(run)
    loop.run(config, run, mode="train", overwrite=True)
    out = capsys.readouterr().out
    [moved] = [e for e in os.listdir(run) if e.startswith("replaced-")]
    assert (
        f"--overwrite: moved what {run} held to {os.path.join(run, moved)}; starting from "
        "scratch." in out
    )
    assert "Resumed from step" not in out
    # Trained from step 0 again: one start, four steps, the same state as the first time.
    assert [(e["event"], e["step"]) for e in runs.events(run)] == [
        ("started", 0),
        ("train", 1),
        ("train", 2),
        ("validation", 2),
        ("train", 3),
        ("train", 4),
        ("validation", 4),
    ]
    moved_entries = os.listdir(os.path.join(run, moved))
    # Besides the TensorBoard event files (config.log.tensorboard), the first run's files.
    tensorboard = [e for e in moved_entries if e.startswith("events.out.tfevents.")]
    assert tensorboard
    assert sorted(set(moved_entries) - set(tensorboard)) == sorted(
        ["best", "checkpoints", "checksums.json", "config.json", "metrics.jsonl"]
    )
    import jax
    import numpy as np

    jax.tree.map(np.testing.assert_array_equal, runs.final_state(run), first)


def test_a_resume_on_another_device_count_says_so(tmp_path, data_dir, reference, capsys):
    run = _copy(reference, tmp_path)
    # The run's history says its steps ran on 8 devices; this process has 4.
    path = os.path.join(run, "metrics.jsonl")
    lines = [json.loads(line) for line in open(path)]
    assert {k: v for k, v in lines[0].items() if k != "wall_time"} == {
        "event": "started",
        "step": 0,
        "devices": 4,
        "mesh_shape": [2, 2],
    }
    lines[0].update(devices=8, mesh_shape=[4, 2])
    with open(path, "w") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in lines)
    loop.run(runs.config_for(data_dir), run, mode="train")
    out = capsys.readouterr().out.splitlines()
    assert (
        f"Note: resuming on 4 devices (mesh [2, 2]), but the steps up to {runs.STEPS} ran "
        "on 8 (mesh [4, 2]): training continues, but not bit-identical to a run on one "
        "device count (sums are split differently)."
    ) in out
    [resumed] = runs.events(run, "resumed")
    assert resumed["devices"] == 4
    # The same device count says nothing.
    loop.run(runs.config_for(data_dir), run, mode="train")
    assert not any(
        line.startswith("Note: resuming") for line in capsys.readouterr().out.split("\n")
    )


@pytest.mark.parametrize(
    "line, number",
    [
        (b'{"event": "train", "st\xffep": 2}\n', 3),
        (b"[1, 2]\n", 3),
        (b'{"event": "train", "step": "two"}\n', 3),
    ],
)
def test_a_damaged_metrics_line_is_named(tmp_path, line, number):
    path = tmp_path / workdir_lib.METRICS_FILE
    good = b'{"event": "train", "step": 1}\n{"event": "validation", "step": 1}\n'
    path.write_bytes(good + line + b'{"event": "train", "step": 2}\n')
    with pytest.raises(workdir_lib.WorkdirError) as error:
        workdir_lib.trim_metrics(str(tmp_path), 1)
    assert str(error.value).startswith(f"{path} line {number} is not a metrics record (")
    assert str(error.value).endswith(": fix or delete that line, then run the same command again.")
    # The last line without its newline is what a crash cut short: dropped, no error.
    path.write_bytes(good + b'{"event": "tr')
    workdir_lib.trim_metrics(str(tmp_path), 1)
    assert path.read_bytes() == good


def test_a_damaged_config_json_is_named_with_its_line(tmp_path, data_dir):
    (tmp_path / "config.json").write_text('{\n  "seed": 3,\n  "task": {"name": "copy",,\n}\n')
    # Column 27: the second comma of line 3.
    with pytest.raises(workdir_lib.WorkdirError) as error:
        workdir_lib.check(str(tmp_path), runs.config_for(data_dir))
    assert str(error.value).startswith(
        f"{tmp_path / 'config.json'} line 3 column 27: Expecting "
        "property name enclosed in double quotes."
    )
