"""Bad input gets one clear error, before anything compiles or the workdir is touched; and a run
that diverges stops naming the step and the last good checkpoint.

In-process for the config checks of `loop.run` (tests/test_config_schema.py has the rest of
`validate`); through `python -m lenggen.main` for what only the command line sees (flags,
exit status, one line on stderr). The command-line cases run as concurrent processes.
"""

import json
import math
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lenggen import config_schema, sharding
from lenggen.train import loop
from tests.reliability import runs

# What a run compiles; none of it may compile before a bad config is refused.
_RUN_PROGRAMS = (
    "train_step",
    "_fresh_state",
    "teacher_forced_correct",
    "greedy_decode",
    "_all_finite",
    "_tree_checksum",
)


@pytest.fixture
def compiled():
    """Names of the functions XLA compiles while the test runs."""
    names = []

    def listen(event, duration, **kwargs):
        del duration
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(kwargs.get("fun_name", ""))

    jax.monitoring.register_event_duration_secs_listener(listen)
    yield names
    jax.monitoring.unregister_event_duration_listener(listen)


def _refused(config, workdir: str, compiled: list[str]) -> str:
    with pytest.raises(config_schema.ConfigError) as error:
        loop.run(config, workdir)
    assert not any(p in name for name in compiled for p in _RUN_PROGRAMS), compiled
    assert not os.path.exists(os.path.join(workdir, "config.json"))  # workdir not claimed
    return str(error.value)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: setattr(c.task, "name", "kopy"), "Unknown task 'kopy'. Valid tasks: addition, "),
        (
            lambda c: setattr(c.model.pe, "name", "rope"),
            "Unknown positional encoding config.model.pe.name='rope'. Valid: nope, ",
        ),
        (
            lambda c: setattr(c.model, "attention_impl", "flash9"),
            "config.model.attention_impl='flash9': expected one of ",
        ),
        (lambda c: setattr(c.mesh, "shape", (3, 1)), "needs 3 devices but 4 are available"),
        (
            lambda c: setattr(c.train, "batch_size", 7),
            "config.train.batch_size=7 is not divisible by the mesh's data axis (2 devices)",
        ),
        (
            lambda c: setattr(c.train, "max_bytes_per_device", -1),
            "config.train.max_bytes_per_device=-1: expected an integer >= 0",
        ),
        # Every PE's options, checked by building the PE (the chosen one also against d_kv).
        (
            lambda c: c.model.pe.ape.update(kind="learnt"),
            "config.model.pe.ape: ape kind must be one of ('sinusoidal', 'learned'), got 'learnt'. "
            "Defaults: {'kind': 'sinusoidal', 'max_length': 16384}.",
        ),
        (
            lambda c: c.model.pe.t5.update(num_buckets=1),
            "config.model.pe.t5: t5 num_buckets must be >= 2, got 1. Defaults: ",
        ),
        (
            lambda c: c.model.pe.update(name="rotary", rotary=dict(fraction=0.1, base=1e4)),
            "config.model.pe.rotary: rotary rotates int(fraction * head_dim) = int(0.1 * 16) = 1 "
            "dims; expected an even number >= 2.",
        ),
        (
            lambda c: c.model.pe.fire.update(init_c=-1.0),
            "config.model.pe.fire: fire init_c must be > 0, got -1.0.",
        ),
        (
            lambda c: setattr(c, "seed", 2**32),
            "config.seed=4294967296: expected an integer in [0, 2**32).",
        ),
        (
            lambda c: setattr(c.mesh, "shape", (2.9, 1)),
            "config.mesh.shape=(2.9, 1): expected a tuple of 2 integers for axes ('data', 'model')",
        ),
        (
            lambda c: setattr(c.train, "adam_b1", 2.0),
            "config.train.adam_b1=2.0: expected a value in [0, 1).",
        ),
        (
            lambda c: setattr(c.train, "adam_b2", -0.1),
            "config.train.adam_b2=-0.1: expected a value in [0, 1).",
        ),
        (
            lambda c: setattr(c.train, "learning_rate", math.inf),
            "config.train.learning_rate=inf: expected a finite number > 0.",
        ),
        (
            lambda c: setattr(c.train, "weight_decay", math.nan),
            "config.train.weight_decay=nan: expected a finite number >= 0.",
        ),
        (
            lambda c: setattr(c.train, "adam_eps", 0.0),
            "config.train.adam_eps=0.0: expected a finite number > 0.",
        ),
    ],
)
def test_bad_config_is_refused_before_anything_compiles(
    tmp_path, data_dir, compiled, edit, message
):
    config = runs.config_for(data_dir)
    edit(config)
    assert message in _refused(config, str(tmp_path / "run"), compiled)


def test_test_lengths_beyond_a_learned_ape_table_are_refused(tmp_path, data_dir, compiled):
    config = runs.config_for(data_dir)
    config.model.pe.name = "ape"
    config.model.pe.ape.update(kind="learned", max_length=8)
    message = _refused(config, str(tmp_path / "run"), compiled)
    needed = int(re.search(r"Evaluation needs positions up to (\d+)", message)[1])
    assert needed > 7 and "positional encoding 'ape' represents positions up to 7" in message
    config.model.pe.ape.max_length = needed + 1  # the smallest table that fits is accepted
    loop.Experiment(config, str(tmp_path / "run"))


def test_state_bytes_per_device_by_hand():
    mesh = sharding.make_mesh((2, 2))
    abstract = {
        "w": jax.ShapeDtypeStruct((8, 6), np.float32),
        "b": jax.ShapeDtypeStruct((5,), jax.numpy.bfloat16),
        "n": jax.ShapeDtypeStruct((), np.int32),
    }
    shardings = {
        "w": NamedSharding(mesh, P("data", "model")),
        "b": NamedSharding(mesh, P()),
        "n": NamedSharding(mesh, P()),
    }
    # w: a 4 x 3 block of float32; b: all 5 bfloat16; n: one int32.
    assert loop.state_bytes_per_device(abstract, shardings) == 4 * 3 * 4 + 5 * 2 + 4


def test_a_model_too_large_for_its_budget_is_refused(tmp_path, data_dir, compiled):
    config = runs.config_for(data_dir)
    config.train.max_bytes_per_device = 1000
    message = _refused(config, str(tmp_path / "run"), compiled)
    needed = int(re.search(r"needs at least ([\d,]+) bytes", message)[1].replace(",", ""))
    assert "more than the 1,000 bytes config.train.max_bytes_per_device allows" in message
    assert "{'data': 2, 'model': 2}" in message
    # The boundary: exactly the estimate fits, one byte less does not.
    config.train.max_bytes_per_device = needed
    loop.Experiment(config, str(tmp_path / "run"))
    config.train.max_bytes_per_device = needed - 1
    with pytest.raises(config_schema.ConfigError, match=f"needs at least {needed:,} bytes"):
        loop.Experiment(config, str(tmp_path / "run"))
    # Parameters, two Adam moments and a gradient: about 4x the parameters' share.
    experiment = loop.Experiment(runs.config_for(data_dir), str(tmp_path / "run"))
    params = loop.state_bytes_per_device(
        experiment.layout.abstract["params"], experiment.layout.sharding["params"]
    )
    assert 4 * params <= needed < 4 * params + 1024


# ---- The command line: every case below is one `python -m lenggen.main` process.

_CASES = {
    "unknown_key": ["--config.train.batch_sizee=8"],
    "malformed_override": ["--config.train.batch_size=abc"],
    "malformed_argument": [],
    "short_learned_ape": [
        "--config.model.pe.name=ape",
        "--config.model.pe.ape.kind=learned",
        "--config.model.pe.ape.max_length=8",
    ],
    "other_experiment": [],
    # One process for two stories: --overwrite replaces the other experiment, then the new one
    # diverges (lr 1e30).
    "overwrite_then_diverges": [
        "--overwrite",
        "--config.train.learning_rate=1e30",
        "--config.train.checkpoint_every=2",
        "--mode=train",
    ],
    "bad_pe_option": ["--config.model.pe.name=rotary", "--config.model.pe.rotary.fraction=2.0"],
    "bad_rotary_scaling": [
        "--config.model.pe.name=rotary",
        "--config.model.pe.rotary.scaling=yarn",
        "--config.model.pe.rotary.scaling_factor=2",
    ],
    "negative_seed": ["--config.seed=-1"],
    "mesh_string": ["--config.mesh.shape=data"],
    "stray_argument": ["resume"],
    "syntax_error": [],
    "workdir_is_a_file": [],
    "read_only_workdir": [],
    "evaluate_missing": ["--mode=evaluate"],
    "evaluate_empty": ["--mode=evaluate"],
    "evaluate_other_pe": ["--mode=evaluate", "--config.model.pe.name=alibi"],
    "damaged_config_json": [],
    "damaged_metrics_line": [],
    "damaged_best": ["--mode=evaluate"],
}
_CONFIG_ARGUMENTS = {"malformed_argument": "steps=many", "other_experiment": "steps=4"}
_SYNTAX_ERROR = "def get_config(arg=None):\n    return dict(\n        steps=4,,\n    )\n"


def _read_only_directory(path) -> bool:
    """Makes `path` a directory this process cannot write: a read-only tmpfs as root (root
    writes through permission bits), else mode 0555. False when neither is possible."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        return True
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


def _setup(case: str, workdir, reference) -> list[str]:
    """Leaves `workdir` as `case` needs it; returns extra command-line words."""
    if case in ("other_experiment", "overwrite_then_diverges"):
        workdir.mkdir()  # holding the 32-step experiment of `reference`
        shutil.copy(os.path.join(reference[0], "config.json"), workdir)
    elif case in (
        "evaluate_other_pe",
        "damaged_config_json",
        "damaged_metrics_line",
        "damaged_best",
    ):
        shutil.copytree(reference[0], workdir)
    elif case == "syntax_error":
        (workdir.parent / "bad_config.py").write_text(_SYNTAX_ERROR)
        return [f"--config={workdir.parent / 'bad_config.py'}"]
    elif case == "workdir_is_a_file":
        workdir.write_text("not a directory\n")
    elif case == "read_only_workdir":
        if not _read_only_directory(workdir):
            return ["--skip"]
    elif case == "evaluate_empty":
        workdir.mkdir()
    if case == "damaged_config_json":
        path = workdir / "config.json"
        lines = path.read_text().splitlines(keepends=True)
        lines[4] = lines[4].replace(":", ";", 1)
        path.write_text("".join(lines))
    elif case == "damaged_metrics_line":
        path = workdir / "metrics.jsonl"
        lines = path.read_bytes().splitlines(keepends=True)
        lines[6] = lines[6][:10] + b"\xff\xfe" + lines[6][12:]
        path.write_bytes(b"".join(lines))
    elif case == "damaged_best":
        for root, _, names in os.walk(workdir / "best"):
            for name in names:
                os.truncate(os.path.join(root, name), 0)
    return []


@pytest.fixture(scope="module")
def cli(tmp_path_factory, data_dir, reference):
    """case -> (workdir, exit status, stderr); the processes run concurrently."""
    root = tmp_path_factory.mktemp("cli")
    processes, mounts = {}, []
    for case, flags in _CASES.items():
        (root / case).mkdir()
        workdir = root / case / "run"
        extra = _setup(case, workdir, reference)
        if extra == ["--skip"]:
            continue
        if case == "read_only_workdir" and os.geteuid() == 0:
            mounts.append(workdir)
        argument = _CONFIG_ARGUMENTS.get(case, f"steps={runs.STEPS}")
        config = [f"--config={runs.CONFIG_FILE}:{argument}"]
        if extra and extra[0].startswith("--config="):
            config, extra = extra[:1], extra[1:]
        processes[case] = (
            workdir,
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "lenggen.main",
                    *config,
                    f"--workdir={workdir}",
                    f"--config.data.dir={data_dir}",
                    *flags,
                    *extra,
                ],
                cwd=runs.REPO,
                env=dict(os.environ, JAX_LOG_COMPILES="1"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
    done = {}
    try:
        for case, (workdir, process) in processes.items():
            _, stderr = process.communicate(timeout=300)
            done[case] = (str(workdir), process.returncode, stderr)
    finally:
        for mount in mounts:
            subprocess.run(["umount", "-l", str(mount)], check=False)
    return done


def _one_line_error(cli, case: str, status: int = 2) -> str:
    """The `lenggen: ...` message of a case that must stop with `status` before compiling."""
    if case not in cli:
        pytest.skip(f"{case}: this machine cannot make a directory this process cannot write")
    _, got, stderr = cli[case]
    assert got == status, stderr[-3000:]
    assert "Traceback" not in stderr and "Compiling" not in stderr, stderr[-3000:]
    [line] = [line for line in stderr.splitlines() if line.startswith("lenggen: ")]
    return line


@pytest.mark.parametrize(
    "case, message",
    [
        (
            "unknown_key",
            "lenggen: Unknown config key 'batch_sizee' Did you mean \"batch_size\" instead of "
            '"batch_sizee"?',
        ),
        (
            "malformed_override",
            "lenggen: flag --config.train.batch_size=abc: invalid literal for int() with base 10: "
            "'abc'",
        ),
        ("malformed_argument", "lenggen: Config argument steps='many': expected int like 24."),
    ],
)
def test_bad_flags_get_one_line_and_status_2(cli, case, message):
    assert _one_line_error(cli, case) == message


def test_a_short_learned_ape_table_is_refused_on_the_command_line(cli):
    line = _one_line_error(cli, "short_learned_ape")
    assert "positional encoding 'ape' represents positions up to 7" in line
    assert not os.path.exists(os.path.join(cli["short_learned_ape"][0], "config.json"))


def test_a_workdir_of_another_experiment_is_refused_and_left_as_it_was(cli):
    workdir = cli["other_experiment"][0]
    line = _one_line_error(cli, "other_experiment")
    assert line == (
        f"lenggen: Workdir {workdir} holds a run of a different config: train.eval_every "
        "(saved 16, now 2), train.num_steps (saved 32, now 4). Use another --workdir, or pass "
        "--overwrite to start this config there from scratch."
    )
    assert os.listdir(workdir) == ["config.json"]
    with open(os.path.join(workdir, "config.json")) as handle:
        assert json.load(handle)["train"]["num_steps"] == 32


def test_overwrite_replaces_the_other_experiment_and_divergence_stops_it(cli):
    workdir, status, stderr = cli["overwrite_then_diverges"]
    # --overwrite moved the 32-step experiment aside, whole, and started this one afresh.
    [replaced] = [e for e in os.listdir(workdir) if e.startswith("replaced-")]
    assert os.listdir(os.path.join(workdir, replaced)) == ["config.json"]
    with open(os.path.join(workdir, replaced, "config.json")) as handle:
        assert json.load(handle)["train"]["learning_rate"] == 3e-3
    with open(os.path.join(workdir, "config.json")) as handle:
        assert json.load(handle)["train"]["learning_rate"] == 1e30
    # lr 1e30: step 3's update leaves NaN parameters, so step 4's loss is NaN; the check
    # before each save kept them out of every checkpoint.
    assert status == 3, stderr[-3000:]
    assert re.search(
        rf"lenggen: Loss is (nan|inf|-inf) at step 4\. Last good checkpoint: step 2 in "
        rf"{re.escape(workdir)}/checkpoints\.",
        stderr,
    ), stderr[-3000:]
    assert runs.complete_steps(workdir) == [2]
    state = runs.final_state(workdir, 2)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state))
    [event] = runs.events(workdir, "non_finite")
    assert event["step"] == 4 and event["last_good_checkpoint"] == 2
    # Step 3's own loss was finite (its gradient was not): logged, unlike step 4's.
    assert [e["step"] for e in runs.events(workdir, "train")] == [1, 2, 3]
    assert not math.isfinite(runs.events(workdir, "train")[-1]["grad_norm"])


def test_randomized_positions_range_must_cover_every_sequence(tmp_path):
    """M must exceed the longest sequence (here the quickstart's ~30 tokens), before compile."""
    from configs import quickstart
    from lenggen import config_schema
    from lenggen.train import loop

    config = quickstart.get_config()
    config.model.pe.name = "t5"
    config.model.pe.randomized_max_position = 16
    config.eval.metric = "teacher_forced"
    config.data.dir = str(tmp_path / "data")
    with pytest.raises(config_schema.ConfigError, match="randomized_max_position=16 is below"):
        loop.Experiment(config, str(tmp_path / "run"))


def _untouched_after(cli, case: str) -> str:
    workdir = cli[case][0]
    assert not os.path.exists(os.path.join(workdir, "config.json")), case
    return workdir


@pytest.mark.parametrize(
    "case, message",
    [
        (
            "bad_pe_option",
            "lenggen: config.model.pe.rotary: rotary fraction must be in (0, 1], got 2.0. "
            "Defaults: {'fraction': 0.25, 'base': 10000.0, 'scaling': 'none', "
            "'scaling_factor': 1.0, 'original_max_position': 0, 'beta_fast': 32.0, "
            "'beta_slow': 1.0}.",
        ),
        (
            "bad_rotary_scaling",
            "lenggen: config.model.pe.rotary: rotary scaling='yarn' needs original_max_position "
            "> 0 (the training context in tokens), got 0. Defaults: {'fraction': 0.25, 'base': "
            "10000.0, 'scaling': 'none', 'scaling_factor': 1.0, 'original_max_position': 0, "
            "'beta_fast': 32.0, 'beta_slow': 1.0}.",
        ),
        ("negative_seed", "lenggen: config.seed=-1: expected an integer in [0, 2**32)."),
        (
            "mesh_string",
            "lenggen: config.mesh.shape=('data',): expected a tuple of 2 integers for axes "
            "('data', 'model'), e.g. --config.mesh.shape='(-1, 1)'.",
        ),
        (
            "stray_argument",
            "lenggen: Unexpected argument(s) resume: every option is a --flag (e.g. --config=FILE "
            "--workdir=DIR). Pass --helpshort to list them.",
        ),
    ],
)
def test_bad_values_are_refused_before_the_workdir_exists(cli, case, message):
    assert _one_line_error(cli, case) == message
    assert not os.path.exists(cli[case][0])  # nothing claimed: the corrected command runs


def test_a_config_file_syntax_error_names_the_file_and_line(cli):
    line = _one_line_error(cli, "syntax_error")
    path = os.path.join(os.path.dirname(cli["syntax_error"][0]), "bad_config.py")
    assert line == f"lenggen: Config file {path} line 3: invalid syntax."


def test_a_workdir_that_is_a_file_or_read_only_is_refused(cli):
    workdir = cli["workdir_is_a_file"][0]
    assert _one_line_error(cli, "workdir_is_a_file") == (
        f"lenggen: --workdir={workdir} is a file; expected a directory."
    )
    workdir = cli["read_only_workdir"][0] if "read_only_workdir" in cli else None
    assert _one_line_error(cli, "read_only_workdir") == (
        f"lenggen: --workdir={workdir} cannot be written ({workdir}: Read-only file system); "
        "choose a writable directory."
        if os.geteuid() == 0
        else f"lenggen: --workdir={workdir} cannot be written ({workdir}: Permission denied); "
        "choose a writable directory."
    )


@pytest.mark.parametrize("case", ["evaluate_missing", "evaluate_empty"])
def test_evaluate_without_a_run_is_refused_and_creates_nothing(cli, case):
    workdir = cli[case][0]
    assert _one_line_error(cli, case) == (
        f"lenggen: Workdir {workdir} holds no run to evaluate (no config.json): train first, "
        "e.g. with --mode=train_and_evaluate."
    )
    if case == "evaluate_missing":
        assert not os.path.exists(workdir)
    else:
        assert os.listdir(workdir) == []  # no best/ or checkpoints/


def test_evaluate_under_another_pe_is_refused_and_keeps_the_results(cli, reference):
    workdir = cli["evaluate_other_pe"][0]
    assert _one_line_error(cli, "evaluate_other_pe") == (
        f"lenggen: Workdir {workdir} trained another config: model.pe.name (saved 'nope', now "
        "'alibi'). --mode=evaluate scores a run only under the config it trained with (it may "
        "change eval.*, mesh.* and data.*): drop those overrides."
    )
    for name in ("results.json", "samples.jsonl"):
        with (
            open(os.path.join(workdir, name)) as got,
            open(os.path.join(reference[0], name)) as expected,
        ):
            assert got.read() == expected.read()


def test_damaged_workdir_files_are_named_with_their_line(cli):
    workdir = cli["damaged_config_json"][0]
    line = _one_line_error(cli, "damaged_config_json")
    assert line.startswith(f"lenggen: {workdir}/config.json line 5 column ")
    assert line.endswith(
        "Restore that run's config.json, or pass --overwrite to move the run "
        "aside and start from scratch."
    )
    workdir = cli["damaged_metrics_line"][0]
    line = _one_line_error(cli, "damaged_metrics_line")
    assert line.startswith(f"lenggen: {workdir}/metrics.jsonl line 7 is not a metrics record (")
    assert line.endswith(": fix or delete that line, then run the same command again.")


def test_a_damaged_best_checkpoint_is_one_line_without_tracebacks(cli):
    workdir, status, stderr = cli["damaged_best"]
    assert status == 4, stderr[-3000:]
    assert "Traceback" not in stderr and "Event loop is closed" not in stderr, stderr[-3000:]
    [line] = [line for line in stderr.splitlines() if line.startswith("lenggen: ")]
    # Every file of best/16 is empty, its metrics too, which Orbax reads when it opens best/.
    assert line.startswith(f"lenggen: {workdir}/best cannot be opened (JSONDecodeError: ")
    assert line.endswith(
        "Move it aside (to keep it for inspection) and run the same command "
        "again: evaluation then scores the newest checkpoint."
    )
