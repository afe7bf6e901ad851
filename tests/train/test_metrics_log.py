"""What a run records besides checkpoints: TensorBoard events (read back with TensorBoard's own
EventAccumulator), wall-clock times in metrics.jsonl, provenance in config.json and
results.json, the smoothed ETA, and the optional W&B mirror."""

import importlib.metadata
import json
import math
import os
import subprocess
import sys
import time
import types

import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from lenggen import results
from lenggen import workdir as workdir_lib
from lenggen.train import loop, metrics_log
from tests.reliability import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 6-step tiny run: train logs at every step, validations at steps 3 and 6."""
    workdir = str(tmp_path_factory.mktemp("tb_run"))
    config = tiny_config.get_config("steps=6")
    config.data.dir = str(tmp_path_factory.mktemp("data"))
    before = time.time()
    payload = loop.run(config, workdir)
    return config, workdir, payload, before, time.time()


def _events(workdir: str) -> event_accumulator.EventAccumulator:
    accumulator = event_accumulator.EventAccumulator(
        workdir, size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return accumulator


def _jsonl(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, workdir_lib.METRICS_FILE)) as handle:
        return [json.loads(line) for line in handle]


def test_train_scalars_in_tensorboard_equal_metrics_jsonl(run):
    _, workdir, _, _, _ = run
    events = _events(workdir)
    rows = [r for r in _jsonl(workdir) if r["event"] == "train"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "token_accuracy", "learning_rate", "steps_per_second"):
        scalars = events.Scalars(f"train/{key}")
        assert [s.step for s in scalars] == [1, 2, 3, 4, 5, 6]
        # Event files hold float32: equal to the JSON's float64 up to float32 rounding.
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in rows], rel=1e-6)


def test_validation_and_final_results_in_tensorboard(run):
    _, workdir, payload, _, _ = run
    events = _events(workdir)
    validations = [r for r in _jsonl(workdir) if r["event"] == "validation"]
    overall = events.Scalars("validation/exact_match")
    assert [(s.step, s.value) for s in overall] == [
        (r["step"], pytest.approx(r["exact_match"])) for r in validations
    ]
    assert [r["step"] for r in validations] == [3, 6]
    tags = events.Tags()["scalars"]
    for split in ("final/validation", "final/test"):
        by_length = payload["splits"][split.split("/")[1]]["by_length"]
        names = sorted(t for t in tags if t.startswith(f"{split}/exact_match_by_length/"))
        # Zero-padded, so TensorBoard's alphabetical order is the numeric order.
        assert names == [f"{split}/exact_match_by_length/{int(k):03d}" for k in by_length]
        for length, entry in by_length.items():
            scalars = events.Scalars(f"{split}/exact_match_by_length/{int(length):03d}")
            assert [(s.step, s.value) for s in scalars] == [
                (payload["step"], pytest.approx(entry["exact_match"]))
            ]
    test = events.Scalars("final/test/exact_match")
    assert [(s.step, s.value) for s in test] == [
        (payload["step"], pytest.approx(payload["splits"]["test"]["overall"]))
    ]
    table = events.Tensors("results/text_summary")[-1]
    text = table.tensor_proto.string_val[0].decode()
    assert text == "\n".join("    " + line for line in results.format_table(payload).splitlines())


def test_hyperparameters_and_provenance_in_tensorboard(run):
    config, workdir, payload, _, _ = run
    events = _events(workdir)
    content = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = session.session_start_info.hparams
    assert hparams["model.d_model"].number_value == config.model.d_model == 32
    assert hparams["task.name"].string_value == "copy"
    assert hparams["train.learning_rate"].number_value == pytest.approx(3e-3)
    assert hparams["model.pe.name"].string_value == "nope"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert {m.name.tag for m in experiment.experiment.metric_infos} == set(
        metrics_log.HPARAM_METRICS
    )
    text = events.Tensors("provenance/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads("\n".join(line[4:] for line in text.splitlines()))["mesh"] == {
        "data": 2,
        "model": 2,
    }


def test_metrics_jsonl_rows_carry_wall_clock_times_in_order(run):
    _, workdir, _, before, after = run
    rows = _jsonl(workdir)
    times = [r["wall_time"] for r in rows]
    # A "started" event (with the device count), 6 train and 2 validation rows.
    assert [r["event"] for r in rows].count("started") == 1
    assert len(times) == 1 + 6 + 2
    assert before <= times[0] and times[-1] <= after
    assert times == sorted(times)


def test_provenance_in_config_and_results(run):
    config, workdir, payload, before, after = run
    with open(os.path.join(workdir, workdir_lib.CONFIG_FILE)) as handle:
        saved_config = json.load(handle)
    with open(os.path.join(workdir, workdir_lib.RESULTS_FILE)) as handle:
        saved_results = json.load(handle)
    for block in (saved_config["provenance"], saved_results["provenance"]):
        assert block["packages"]["jax"] == importlib.metadata.version("jax")
        assert block["packages"]["orbax-checkpoint"] == importlib.metadata.version(
            "orbax-checkpoint"
        )
        assert block["devices"] == {"platform": "cpu", "kind": "cpu", "count": 4, "processes": 1}
        assert block["mesh"] == {"data": 2, "model": 2}
        assert block["lenggen"]["version"] == "0.1.0"
    assert saved_config["provenance"]["ended"] is None
    started = saved_results["provenance"]["started"]
    ended = saved_results["provenance"]["ended"]
    iso = "%Y-%m-%dT%H:%M:%SZ"
    start_s = time.mktime(time.strptime(started, iso)) - time.timezone
    end_s = time.mktime(time.strptime(ended, iso)) - time.timezone
    assert math.floor(before) - 1 <= start_s <= end_s <= math.ceil(after) + 1
    # The guard compares training keys only: the same config resumes although the
    # provenance (start time, command) differs.
    workdir_lib.check(workdir, config)


def test_resumed_run_purges_events_logged_after_its_checkpoint(tmp_path):
    config = tiny_config.get_config("steps=4")
    config.data.dir = str(tmp_path / "data")
    workdir = str(tmp_path / "run")
    first = metrics_log.open_writer(workdir, config, is_writer=True)
    for step in (1, 2, 3):
        first.train(step, {"loss": float(step)}, 1.0)
    first.close()
    second = metrics_log.open_writer(workdir, config, is_writer=True, purge_step=2)
    second.train(2, {"loss": 20.0}, 1.0)
    second.close()
    # Steps 2 and 3 of the interrupted process are hidden; step 2 is logged once, again.
    assert [(s.step, s.value) for s in _events(workdir).Scalars("train/loss")] == [
        (1, 1.0),
        (2, 20.0),
    ]


def test_other_processes_and_disabled_tensorboard_write_nothing(tmp_path):
    config = tiny_config.get_config("steps=4")
    writer = metrics_log.open_writer(str(tmp_path), config, is_writer=False)
    writer.train(1, {"loss": 1.0}, 1.0)
    writer.close()
    config.log.tensorboard = False
    metrics_log.open_writer(str(tmp_path), config, is_writer=True).close()
    assert os.listdir(tmp_path) == []


def test_smoothed_rate_replaces_the_compile_window_then_blends():
    rate = metrics_log.SmoothedRate(alpha=0.5)
    assert rate.eta_seconds(10) == math.inf
    assert rate.update(1.0) == 1.0  # first window: compilation included
    assert rate.update(8.0) == 8.0  # replaces it
    assert rate.update(4.0) == 6.0  # 0.5 * 4 + 0.5 * 8
    assert rate.update(6.0) == 6.0
    assert rate.eta_seconds(30) == 5.0
    with pytest.raises(ValueError, match="alpha must be in"):
        metrics_log.SmoothedRate(alpha=0.0)


def test_wandb_mirrors_scalars_when_a_project_is_named(tmp_path, monkeypatch):
    calls = []

    class FakeRun:
        def log(self, values, step):
            calls.append(("log", dict(values), step))

        def finish(self):
            calls.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: calls.append(("init", kwargs)) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    config = tiny_config.get_config("steps=4")
    config.log.wandb_project = "lenggen-test"
    writer = metrics_log.open_writer(str(tmp_path), config, is_writer=True)
    writer.train(3, {"loss": 0.5}, 2.0)
    writer.close()
    assert calls[0][0] == "init" and calls[0][1]["project"] == "lenggen-test"
    assert calls[0][1]["config"]["model.d_model"] == 32
    assert calls[1:] == [
        ("log", {"train/loss": 0.5, "train/steps_per_second": 2.0}, 3),
        ("finish",),
    ]


def test_wandb_without_the_package_is_refused_up_front(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    monkeypatch.setattr(metrics_log.importlib.util, "find_spec", lambda name: None)
    config = tiny_config.get_config("steps=4")
    config.log.wandb_project = "p"
    with pytest.raises(
        metrics_log.LoggingConfigError,
        match=r"config.log.wandb_project='p' needs the wandb package",
    ):
        metrics_log.check(config)


def test_analysis_command_prints_no_orbax_lines(run, tmp_path):
    """The attention-map command restores the run's checkpoint; its output is its own line."""
    _, workdir, _, _, _ = run
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lenggen.analysis.attention_maps",
            f"--workdir={workdir}",
            f"--output_dir={tmp_path}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith(os.path.join(str(tmp_path), "attention_maps.png"))
    assert done.stderr == ""
