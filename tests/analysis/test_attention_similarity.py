"""End to end on tiny workdirs: lenggen/analysis/runs.py reads a run back, attention_similarity
and attention_maps write their JSON and PNG, and the numbers match an independent computation.

The workdirs hold what the training loop writes (config.json through workdir.claim, Orbax
checkpoints through lenggen.checkpoint) with freshly initialised parameters: the analyses only
read parameters, so training them first would test nothing more.
"""

import json
import math
import os

import jax
import numpy as np
import pytest

from configs import base
from lenggen import checkpoint as checkpoint_lib
from lenggen import sharding, tasks
from lenggen import workdir as workdir_lib
from lenggen.analysis import attention_maps, attention_similarity
from lenggen.analysis import runs as runs_lib
from lenggen.data.tokenizer import Tokenizer
from lenggen.model.decoder import Decoder
from lenggen.model.positional import randomized
from lenggen.train import optimizer as optimizer_lib
from lenggen.train import state as state_lib

TEST_LENGTHS = [21, 22, 23]


def _config(pe: str, seed: int, **task_options):
    config = base.get_config(f"task=copy,pe={pe},seed={seed},smoke=true")
    config.task.options.update(max_test_length=23, num_test_per_length=2, **task_options)
    return config


def _make_workdir(path: str, config, *, best: bool = True) -> str:
    workdir_lib.claim(path, config)
    task = tasks.get(config.task.name, **config.task.options.to_dict())
    model = Decoder.from_config(config.model, Tokenizer.from_task(task).vocab_size)
    optimizer = optimizer_lib.make_optimizer(config.train)
    mesh = sharding.make_mesh((1, 1), jax.devices()[:1])
    layout = state_lib.layout(model, optimizer, mesh, 8)
    state = state_lib.initial_state(model, optimizer, layout, 8, jax.random.key(config.seed))
    checkpoints = checkpoint_lib.Checkpoints(path, keep=1)
    if best:
        checkpoints.save_best(7, state, 0.5)
    checkpoints.save(9, state)
    checkpoints.wait()
    checkpoints.close()
    return path


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {
        name: _make_workdir(str(root / name), _config(pe, seed))
        for name, pe, seed in [("nope", "nope", 1), ("nope_other", "nope", 2), ("t5", "t5", 1)]
    }


@pytest.fixture(scope="module")
def loaded(workdirs):
    return {name: runs_lib.load(path) for name, path in workdirs.items()}


def test_load_rebuilds_the_run(workdirs, loaded):
    run = loaded["t5"]
    assert run.step == 7  # the best checkpoint
    assert run.label == "t5 (seed 1)" and run.model.pe["name"] == "t5"
    assert run.task.name == "copy" and run.tokenizer.vocab_size == run.model.vocab_size
    assert runs_lib.load(workdirs["t5"], "latest").step == 9
    assert "rel_embedding" in run.params["pe"]


def test_load_accepts_a_relative_workdir(workdirs, monkeypatch):
    # Orbax refuses relative checkpoint paths; a researcher types `runs/...` from the repo root.
    parent, name = os.path.split(workdirs["t5"])
    monkeypatch.chdir(parent)
    run = runs_lib.load(name)
    # Restored from the absolute path; recorded as typed (results name no machine's paths).
    assert run.workdir == name and run.step == 7


def test_examples_per_length():
    task = tasks.get("copy", **_config("nope", 1).task.options.to_dict())
    records = runs_lib.examples_per_length(task, Tokenizer.from_task(task), "test", 1)
    assert sorted(int(r["length"]) for r in records) == TEST_LENGTHS  # one each, split order
    with pytest.raises(ValueError, match="per_length must be >= 1, got 0"):
        runs_lib.examples_per_length(task, Tokenizer.from_task(task), "test", 0)


def _kl(p, q) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def _independent_jsd(a: np.ndarray, b: np.ndarray) -> float:
    """min over head pairs of the mean over queries of JSD, float64, written out in loops."""
    best = math.inf
    for p_head in a:
        for q_head in b:
            total = 0.0
            for p, q in zip(p_head, q_head, strict=True):
                m = (p + q) / 2
                total += (_kl(p, m) + _kl(q, m)) / 2
            best = min(best, total / len(p_head))
    return best


def test_similarity_matches_an_independent_computation(loaded):
    reference, others = loaded["nope"], [loaded["nope"], loaded["nope_other"], loaded["t5"]]
    payload = attention_similarity.compare(reference, others, examples_per_length=1, batch_size=2)
    assert payload["num_examples"] == 3 and payload["reference"]["label"] == "nope (seed 1)"
    same, other_seed, t5 = payload["comparisons"]
    for metric in ("jsd", "symmetric_kl"):
        assert same[metric]["overall"] == 0.0  # a run against itself
        assert other_seed[metric]["overall"] > 0 and t5[metric]["overall"] > 0
        assert sorted(int(k) for k in t5[metric]["by_length"]) == TEST_LENGTHS
        assert len(t5[metric]["by_layer"]) == 2
    # Length 22 (one example): recompute from plain forward passes.
    record = [
        r
        for r in runs_lib.examples_per_length(reference.task, reference.tokenizer, "test", 1)
        if r["length"] == 22
    ][0]
    batch = next(runs_lib.batches([record], batch_size=1))
    n = len(record["tokens"])
    ours = np.asarray(runs_lib.attention(reference, batch), np.float64)[:, 0, :, :n, :n]
    theirs = np.asarray(runs_lib.attention(loaded["t5"], batch), np.float64)[:, 0, :, :n, :n]
    expected = np.mean([_independent_jsd(ours[layer], theirs[layer]) for layer in range(2)])
    assert t5["jsd"]["by_length"]["22"] == pytest.approx(expected, rel=1e-4)


def test_similarity_command_writes_json_and_png(workdirs, tmp_path):
    payload = attention_similarity.run(
        workdirs["nope"],
        [workdirs["nope_other"], workdirs["t5"]],
        str(tmp_path),
        examples_per_length=2,
        batch_size=4,
    )
    saved = json.loads((tmp_path / attention_similarity.JSON_FILE).read_text())
    assert saved == json.loads(json.dumps(payload))
    assert [c["label"] for c in saved["comparisons"]] == ["nope (seed 2)", "t5 (seed 1)"]
    assert saved["num_examples"] == 6 and saved["split"] == "test"
    assert os.path.getsize(tmp_path / attention_similarity.PLOT_FILE) > 1000


def test_attention_maps_command(workdirs, tmp_path):
    payload = attention_maps.run(workdirs["t5"], str(tmp_path), length=22, index=1)
    saved = json.loads((tmp_path / attention_maps.JSON_FILE).read_text())
    weights = np.asarray(saved["weights"])
    n = len(saved["tokens"])
    assert weights.shape == (2, 2, n, n) and saved["length"] == 22
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-4)
    assert (weights[..., np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]] == 0).all()
    assert saved["tokens"][-1] == "</s>" and payload["source"].split()[0] == saved["tokens"][0]
    assert os.path.getsize(tmp_path / attention_maps.PLOT_FILE) > 1000
    with pytest.raises(
        ValueError,
        match=r"length 99 is not a bucket of split 'test'; buckets: "
        r"\[21, 22, 23\]",
    ):
        attention_maps.run(workdirs["t5"], str(tmp_path), length=99)


def test_unusable_workdirs_are_rejected(workdirs, loaded, tmp_path):
    with pytest.raises(runs_lib.RunError, match="No run config at .*config.json"):
        runs_lib.load(str(tmp_path))
    workdir_lib.claim(str(tmp_path / "empty"), _config("nope", 3))
    with pytest.raises(runs_lib.RunError, match="No checkpoint under .*train the run first"):
        runs_lib.load(str(tmp_path / "empty"))
    other_task = _make_workdir(
        str(tmp_path / "other"), _config("nope", 4, num_symbols=50), best=False
    )
    assert runs_lib.load(other_task).step == 9  # no best/: the newest checkpoint
    with pytest.raises(ValueError, match="expected the same task"):
        attention_similarity.compare(loaded["nope"], [runs_lib.load(other_task)])


def test_randomized_run_is_read_at_the_positions_evaluation_uses(tmp_path):
    config = _config("rotary", 1)
    config.model.pe.randomized_max_position = 128
    run = runs_lib.load(_make_workdir(str(tmp_path / "randomized"), config))
    record = runs_lib.examples_per_length(run.task, run.tokenizer, "test", 1)[0]
    batch = next(runs_lib.batches([record], batch_size=1))
    n, source_length = len(record["tokens"]), int(record["source_length"])
    # Independently: greedy decoding's table for this prompt, its first n entries.
    table = randomized.decoding_table(
        jax.numpy.asarray(batch["tokens"][:, :source_length]),
        jax.numpy.ones((1, source_length), bool),
        128,
        config.eval.max_new_tokens,
    )
    positions = np.asarray(batch["positions"]).copy()
    positions[0, :n] = np.asarray(table)[0, :n]
    assert positions[0, n - 1] > n - 1  # not 0..n-1: the sampled table
    _, state = run.model.apply(
        {"params": run.params},
        batch["tokens"],
        positions,
        batch["valid"],
        mutable=["intermediates"],
    )
    expected = state["intermediates"]["block_0"]["attention"]["attention_weights"][0]
    got = runs_lib.attention(run, batch)[0]
    np.testing.assert_allclose(got[0, :, :n, :n], np.asarray(expected)[0, :, :n, :n], atol=1e-6)
