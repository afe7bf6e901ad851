"""The training loop end to end at tiny size: results contract, resume after an interruption,
and teacher-forced verdicts equal greedy KV-cache decoding per example (at positions 0, 1, ...
and at randomized positions)."""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import base as base_config
from lenggen import workdir as workdir_lib
from lenggen.data import loader
from lenggen.data import tokenizer as tokenizer_lib
from lenggen.train import loop


def _tiny_config(data_dir: str, **train):
    """A 2-layer decoder on a short copy task: learns lengths 2-6 in a few hundred steps."""
    config = base_config.get_config("task=copy,pe=nope,seed=3")
    config.task.options.update(
        num_symbols=8,
        min_length=2,
        max_train_length=6,
        max_test_length=9,
        num_train=4000,
        num_validation=64,
        num_test_per_length=16,
    )
    config.model.update(num_layers=2, d_model=64, num_heads=4, d_kv=16, d_ff=128, dropout_rate=0.0)
    config.train.update(
        batch_size=32,
        num_steps=1200,
        learning_rate=3e-3,
        end_learning_rate=1e-4,
        log_every=300,
        eval_every=600,
        checkpoint_every=600,
    )
    config.train.update(train)
    config.eval.update(batch_size=32, max_new_tokens=16, num_samples=5)
    config.mesh.shape = (2, 2)  # data x model over the 4 fake devices of conftest.py
    config.data.dir = data_dir
    return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("datasets"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    workdir = str(tmp_path_factory.mktemp("trained"))
    config = _tiny_config(data_dir)
    payload = loop.run(config, workdir)
    return config, workdir, payload


def test_results_file_follows_the_contract(trained):
    config, workdir, payload = trained
    with open(os.path.join(workdir, workdir_lib.RESULTS_FILE)) as handle:
        saved = json.load(handle)
    assert saved == json.loads(json.dumps(payload))
    assert saved["train_max_length"] == 6
    assert saved["step"] in (600, 1200)  # the best-validation checkpoint
    assert set(saved["splits"]) == {"validation", "test"}
    test = saved["splits"]["test"]
    assert sorted(test["by_length"], key=int) == ["7", "8", "9"]
    assert all(entry["n"] == 16 for entry in test["by_length"].values())
    micro = sum(e["exact_match"] * e["n"] for e in test["by_length"].values()) / 48
    assert test["overall"] == pytest.approx(micro)
    validation = saved["splits"]["validation"]
    assert sum(e["n"] for e in validation["by_length"].values()) == 64
    assert all(2 <= int(k) <= 6 for k in validation["by_length"])
    # The model learned (a random one scores 0) and does better in distribution than beyond.
    assert validation["overall"] >= 0.5 > test["overall"]
    events = [json.loads(line) for line in open(os.path.join(workdir, workdir_lib.METRICS_FILE))]
    assert [e["step"] for e in events if e["event"] == "train"] == [300, 600, 900, 1200]
    assert [e["step"] for e in events if e["event"] == "validation"] == [600, 1200]
    assert os.path.getsize(os.path.join(workdir, workdir_lib.PLOT_FILE)) > 5_000


@pytest.fixture(scope="module")
def trained_randomized(tmp_path_factory, data_dir):
    """Rotary trained on randomized positions from [0, 48): 48 >= the longest prompt (10
    tokens) + the 16-token decoding budget, so every decoded token has its own position."""
    workdir = str(tmp_path_factory.mktemp("trained_randomized"))
    config = _tiny_config(
        data_dir, num_steps=600, log_every=300, eval_every=300, checkpoint_every=300
    )
    config.model.pe.name = "rotary"
    config.model.pe.randomized_max_position = 48
    config.eval.metric = "teacher_forced"  # the whole target is the answer (copy)
    loop.run(config, workdir)
    return config, workdir, None


@pytest.mark.parametrize("run", ["trained", "trained_randomized"])
def test_teacher_forcing_and_greedy_decoding_agree_per_example(run, request):
    config, workdir, _ = request.getfixturevalue(run)
    experiment = loop.Experiment(config, workdir)
    checkpoints = loop.checkpoint.Checkpoints(workdir, keep=2)
    params = checkpoints.restore_latest(experiment.layout.restore_target())["params"]
    checkpoints.close()
    verdicts = []
    for split in ("validation", "test"):
        source = experiment.data.splits[split]
        for batch in loader.eval_batches(source, batch_size=32):
            on_mesh = loader.to_global(batch, experiment.mesh)
            teacher_forced = np.asarray(experiment.teacher_forced(params, on_mesh))
            prompts = loader.to_global(loader.prompt_batch(batch), experiment.mesh)
            outputs = np.asarray(
                experiment.greedy(params, prompts["prompt_tokens"], prompts["prompt_valid"])
            )
            for row in np.flatnonzero(batch["example_mask"]):
                target = batch["tokens"][row, batch["source_length"][row] :]
                target = target[: np.flatnonzero(target == tokenizer_lib.EOS_ID)[0] + 1]
                greedy_exact = np.array_equal(outputs[row, : len(target)], target)
                assert teacher_forced[row] == greedy_exact, (split, batch["index"][row])
                verdicts.append(greedy_exact)
    # Both outcomes occur, so the agreement is not vacuous.
    assert 0 < sum(verdicts) < len(verdicts)


def _restore_params(workdir: str) -> dict:
    manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    restored = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore())
    manager.close()
    return restored["params"]


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, data_dir, monkeypatch):
    config = _tiny_config(data_dir, num_steps=6, log_every=2, eval_every=2, checkpoint_every=3)
    straight = str(tmp_path / "straight")
    expected = loop.run(config, straight)

    interrupted = str(tmp_path / "interrupted")
    original_get = loader.TrainBatches.get

    def crash_at_step_4(self, step):
        if step == 4:
            raise KeyboardInterrupt("simulated preemption")
        return original_get(self, step)

    monkeypatch.setattr(loader.TrainBatches, "get", crash_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        loop.run(config, interrupted)
    monkeypatch.setattr(loader.TrainBatches, "get", original_get)
    manager = ocp.CheckpointManager(os.path.join(interrupted, "checkpoints"))
    assert manager.all_steps() == [3]
    manager.close()

    resumed = loop.run(config, interrupted)
    jax.tree.map(
        np.testing.assert_array_equal, _restore_params(straight), _restore_params(interrupted)
    )
    # Same scores; the provenance (times, start) is each process's own.
    assert resumed.pop("provenance")["started"] >= expected.pop("provenance")["started"]
    assert resumed == expected


def test_checkpoint_from_one_mesh_evaluates_on_another(trained):
    """Trained on a (2, 2) data x model mesh, restored onto (4, 1) for evaluation: same results."""
    config, workdir, payload = trained
    config = config.copy_and_resolve_references()
    config.mesh.shape = (4, 1)
    again = loop.run(config, workdir, mode="evaluate")
    assert again.pop("provenance")["mesh"] == {"data": 4, "model": 1}
    assert again == {k: v for k, v in payload.items() if k != "provenance"}
