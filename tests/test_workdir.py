import json
import os

import ml_collections
import pytest

from lenggen import workdir


def _config(**train):
    return ml_collections.ConfigDict(
        dict(
            seed=1,
            task=dict(name="copy", options=dict(num_train=10)),
            model=dict(num_layers=2, pe=dict(name="nope")),
            train=dict(batch_size=8, **train),
            eval=dict(batch_size=8),
            mesh=dict(shape=(-1, 1)),
        )
    )


def test_first_claim_records_the_config(tmp_path):
    workdir.claim(str(tmp_path), _config())
    saved = json.loads((tmp_path / workdir.CONFIG_FILE).read_text())
    assert saved["task"]["name"] == "copy" and saved["mesh"]["shape"] == [-1, 1]


def test_same_training_config_resumes_even_if_eval_or_mesh_change(tmp_path):
    workdir.claim(str(tmp_path), _config())
    other = _config()
    other.eval.batch_size = 32
    other.mesh.shape = (2, 2)
    workdir.claim(str(tmp_path), other)  # no error


def test_a_different_experiment_is_refused_with_the_differing_keys(tmp_path):
    workdir.claim(str(tmp_path), _config())
    other = _config()
    other.seed = 2
    other.model.pe.name = "alibi"
    with pytest.raises(workdir.WorkdirConflictError) as error:
        workdir.claim(str(tmp_path), other)
    message = str(error.value)
    assert "model.pe.name (saved 'nope', now 'alibi')" in message
    assert "seed (saved 1, now 2)" in message
    assert "--overwrite" in message


def test_overwrite_moves_the_old_run_aside_without_deleting_it(tmp_path):
    workdir.claim(str(tmp_path), _config())
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "marker").write_text("old")
    other = _config()
    other.seed = 2
    workdir.claim(str(tmp_path), other, overwrite=True)
    backups = [p for p in tmp_path.iterdir() if p.name.startswith("replaced-")]
    assert len(backups) == 1
    assert (backups[0] / "checkpoints" / "marker").read_text() == "old"
    assert json.loads((backups[0] / workdir.CONFIG_FILE).read_text())["seed"] == 1
    assert json.loads((tmp_path / workdir.CONFIG_FILE).read_text())["seed"] == 2
    assert not os.path.exists(tmp_path / "checkpoints")


def test_runs_saved_before_the_precision_key_read_as_highest():
    """A config.json without model.precision (older runs) is the same experiment as
    precision 'highest', and differs from any other precision."""
    saved = {"model": {"d_model": 8}}
    assert workdir.differing_keys(saved, {"model": {"d_model": 8, "precision": "highest"}}) == []
    assert workdir.differing_keys(saved, {"model": {"d_model": 8, "precision": "default"}}) == [
        "model.precision"
    ]


def _pe_config(name: str, **sections) -> dict:
    return {"model": {"precision": "highest", "pe": {"name": name, **sections}}}


ROTARY_BEFORE_SCALING = {"fraction": 0.25, "base": 10000.0}
ROTARY_NOW = dict(
    ROTARY_BEFORE_SCALING,
    scaling="none",
    scaling_factor=1.0,
    original_max_position=0,
    beta_fast=32.0,
    beta_slow=1.0,
)


def test_runs_saved_before_rotary_scaling_or_a_new_pe_are_the_same_experiment():
    """A config.json from before rotary's scaling keys and the kerple section existed: its
    rotary trained with scaling 'none', and the options of PEs the run does not use shape
    nothing, so a resume or an evaluation is not refused for them."""
    saved = _pe_config("rotary", rotary=ROTARY_BEFORE_SCALING, alibi={})
    current = _pe_config("rotary", rotary=ROTARY_NOW, alibi={}, kerple={"eps": 0.01})
    assert workdir.differing_keys(saved, current) == []
    current["model"]["pe"]["rotary"]["scaling"] = "linear"
    assert workdir.differing_keys(saved, current) == ["model.pe.rotary.scaling"]
    assert workdir.differing_keys(saved, current, evaluating=True) == []
    # The PE a run uses is compared in full, and a switch of PE is still named.
    nope = _pe_config("nope", kerple={"eps": 0.01})
    assert workdir.differing_keys(nope, _pe_config("kerple", kerple={"eps": 0.02})) == [
        "model.pe.kerple.eps",
        "model.pe.name",
    ]
    assert workdir.differing_keys(nope, _pe_config("nope", kerple={"eps": 0.02})) == []


def test_runs_saved_before_the_scan_layers_key_read_as_unrolled():
    """A config.json without model.scan_layers had unrolled blocks: resuming it with the
    scanned layout (another parameter tree) is refused, with the unrolled one it is not."""
    saved = {"model": {"d_model": 8}}
    assert workdir.differing_keys(saved, {"model": {"d_model": 8, "scan_layers": False}}) == []
    assert workdir.differing_keys(saved, {"model": {"d_model": 8, "scan_layers": True}}) == [
        "model.scan_layers"
    ]
