"""The sweep: grids (the paper's and the CPU one), run selection, the config each run gets, the
skip/resume/conflict decision, the printed commands, and the local runner (progress, ETA,
failures, parallel runs, SIGTERM). tests/test_report.py runs a real sweep end to end."""

import dataclasses
import importlib.util
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from lenggen import config_schema, grid, sweep, tasks
from lenggen.report import paper

# ml_collections loads config files with importlib's deprecated load_module().
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_SEEDS = (256788, 234054, 146317)
PAPER_PES = set(paper.PAPER_PE_ORDER)
CHILD_ENV = dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0",
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lenggen.sweep", *args],
        cwd=REPO,
        env=CHILD_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _complete(run: grid.Run, workdir: str, results: bool = True) -> None:
    """Leaves `workdir` as lenggen.main does: config.json (workdir.claim), results.json."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as handle:
        handle.write(grid.resolve_config(run).to_json())
    if results:
        with open(os.path.join(workdir, "results.json"), "w") as handle:
            json.dump({"splits": {}}, handle)


# ---------------------------------------------------------------- grids and configs


def test_product_names_runs_and_passes_overrides_as_main_parses_them():
    runs = grid.product(
        "configs/base.py",
        ("copy", "reverse"),
        ("nope", "t5"),
        (1, 2),
        args={"smoke": True},
        overrides={"train.num_steps": 5, "mesh.shape": (2, 1)},
        task_overrides={"reverse": {"train.num_steps": 7, "train.learning_rate": 1e-05}},
    )
    assert [r.name for r in runs] == [
        "copy/nope/1",
        "copy/nope/2",
        "copy/t5/1",
        "copy/t5/2",
        "reverse/nope/1",
        "reverse/nope/2",
        "reverse/t5/1",
        "reverse/t5/2",
    ]
    assert runs[0].config == "configs/base.py:task=copy,pe=nope,seed=1,smoke=true"
    run = runs[6]
    assert run.flags("w") == [
        "--config=configs/base.py:task=reverse,pe=t5,seed=1,smoke=true",
        "--workdir=w",
        "--config.train.num_steps=7",
        "--config.mesh.shape=(2, 1)",
        "--config.train.learning_rate=1e-05",
    ]
    config = grid.resolve_config(run)
    assert (config.task.name, config.model.pe.name, config.seed) == ("reverse", "t5", 1)
    assert config.train.num_steps == 7 and config.train.learning_rate == 1e-05
    assert tuple(config.mesh.shape) == (2, 1)
    assert config.model.d_model == 32  # smoke=true reached the config file
    assert grid.resolve_config(runs[0]).train.num_steps == 5


def test_product_rejects_unknown_names():
    with pytest.raises(
        grid.GridError,
        match=r"Unknown task\(s\) \['kopy'\] in the grid. "
        r"Valid: addition, copy, ",
    ):
        grid.product("configs/base.py", ("copy", "kopy"), ("nope",), (1,))
    with pytest.raises(
        grid.GridError,
        match=r"Unknown positional encoding\(s\) \['nape'\].*"
        r"Valid: nope, ape, t5, alibi, rotary",
    ):
        grid.product("configs/base.py", ("copy",), ("nape",), (1,))
    with pytest.raises(grid.GridError, match=r"task_overrides names \['scan'\], not in"):
        grid.product(
            "configs/base.py",
            ("copy",),
            ("nope",),
            (1,),
            task_overrides={"scan": {"train.num_steps": 1}},
        )


def test_kerple_and_a_rotary_scaling_in_a_grid():
    assert grid.parse_pes("rotary+kerple", "pes") == ("rotary", "kerple")
    scaling = {
        "model.pe.rotary.scaling": "yarn",
        "model.pe.rotary.scaling_factor": 2.0,
        "model.pe.rotary.original_max_position": 64,
    }
    (run,) = grid.product(
        "configs/base.py", ("copy",), ("rotary",), (1,), overrides=scaling, variant="yarn"
    )
    assert run.name == "copy/rotary+yarn/1"
    assert "--config.model.pe.rotary.scaling=yarn" in run.flags("w")
    config = grid.resolve_config(run)
    assert (config.model.pe.rotary.scaling, config.model.pe.rotary.scaling_factor) == ("yarn", 2.0)
    config_schema.validate(config, num_devices=1)
    config.model.pe.rotary.scaling = "dynamic"
    with pytest.raises(
        config_schema.ConfigError,
        match=r"^config.model.pe.rotary: rotary scaling must be one of \('none', 'linear', "
        r"'ntk', 'yarn'\), got 'dynamic'. Defaults: ",
    ):
        config_schema.validate(config, num_devices=1)


def test_paper_grid_is_ten_tasks_by_five_pes_by_three_seeds_of_the_base_recipe():
    runs = grid.load_grid("configs/grids/paper.py")
    main_tasks = [
        "copy_repeat",
        "copy_repeat_2x",
        "copy_repeat_change",
        "copy",
        "copy_2x",
        "reverse",
        "reverse_2x",
        "reverse_copy",
        "scan",
        "pcfg",
    ]
    assert len(runs) == 150
    assert {tuple(r.name.split("/")) for r in runs} == {
        (t, p, str(s)) for t in main_tasks for p in PAPER_PES for s in PAPER_SEEDS
    }
    for run in runs:
        task, pe, seed = run.name.split("/")
        assert run.config == f"configs/base.py:task={task},pe={pe},seed={seed}"
        # PCFG trains its official runs' steps (tests/test_paper_grid.py), the rest the base.
        assert run.overrides == () or task == "pcfg"
        config = grid.resolve_config(run)
        assert (config.task.name, config.model.pe.name, config.seed) == (task, pe, int(seed))
        assert config.model.num_layers == 12
        assert config.train.num_steps == 40_000 or task == "pcfg"
    maths = grid.load_grid("configs/grids/paper.py:tasks=maths")
    assert len(maths) == 120 and {r.name.split("/")[0] for r in maths} == {
        "addition",
        "polynomial",
        "sort_single_token",
        "sort_multi_digit",
        "summation",
        "parity",
        "lego",
        "lego_shuffled",
    }
    assert len(grid.load_grid("configs/grids/paper.py:tasks=all")) == 270
    with pytest.raises(grid.GridError, match="tasks='bogus': expected one of main, maths, all"):
        grid.load_grid("configs/grids/paper.py:tasks=bogus")


def test_cpu_mini_grid_is_valid_for_two_devices_with_twice_the_training_lengths():
    runs = grid.load_grid("configs/grids/cpu_mini.py")
    assert len(runs) == 45
    assert {tuple(r.name.split("/")) for r in runs} == {
        (t, p, str(s))
        for t in ("copy_repeat", "reverse_2x", "addition")
        for p in PAPER_PES
        for s in PAPER_SEEDS
    }
    built = {}
    for run in runs:
        config = grid.resolve_config(run)
        config_schema.validate(config, num_devices=2)
        assert (config.model.num_layers, config.model.d_model, config.train.batch_size) == (
            2,
            128,
            64,
        )
        if config.task.name not in built:
            built[config.task.name] = tasks.get(config.task.name, **config.task.options.to_dict())
    for name, (train_max, test) in {
        "copy_repeat": (8, range(9, 17)),
        "reverse_2x": (8, range(9, 17)),
        "addition": (4, range(5, 9)),
    }.items():
        assert max(built[name].lengths("train")) == train_max
        assert sorted(built[name].lengths("test")) == list(test)
    assert len(grid.load_grid("configs/grids/cpu_mini.py:seeds=1")) == 15


# ---------------------------------------------------------------- runs beyond the paper


def test_randomized_overrides_hand_worked():
    # Copy-Repeat at the paper's lengths: prompt 42, target 41 -> budget 48 (41 rounded up to
    # 16s), M >= 2 (42 + 48) = 180 -> 256. PCFG: target 257 -> 272, capped at 256;
    # M >= 2 (133 + 256) = 778 -> 1024. M = 2 (p + B) exactly when that is a power of two.
    key, budget = "model.pe.randomized_max_position", "eval.max_new_tokens"
    assert grid.randomized_overrides(42, 41, 256) == {key: 256, budget: 48}
    assert grid.randomized_overrides(133, 257, 256) == {key: 1024, budget: 256}
    assert grid.randomized_overrides(48, 16, 256) == {key: 128, budget: 16}
    assert grid.randomized_overrides(49, 16, 256) == {key: 256, budget: 16}
    with pytest.raises(
        grid.GridError,
        match=r"randomized_overrides\(0, 5, 40\): expected "
        "positive token counts",
    ):
        grid.randomized_overrides(0, 5, 40)


def test_product_names_a_variant_after_the_pe():
    runs = grid.product(
        "configs/base.py",
        ("copy",),
        ("t5",),
        (1,),
        variant="randomized",
        overrides={"model.pe.randomized_max_position": 64},
    )
    assert [r.name for r in runs] == ["copy/t5+randomized/1"]
    assert runs[0].config == "configs/base.py:task=copy,pe=t5,seed=1"
    config = grid.resolve_config(runs[0])
    assert (config.model.pe.name, config.model.pe.randomized_max_position) == ("t5", 64)
    with pytest.raises(grid.GridError, match=r"variant='a/b': expected a word"):
        grid.product("configs/base.py", ("copy",), ("t5",), (1,), variant="a/b")


def test_paper_grid_adds_fire_and_randomized_runs():
    runs = grid.load_grid(
        "configs/grids/paper.py:pes=nope+ape+t5+alibi+rotary+fire,randomized=rotary+t5"
    )
    assert len(runs) == 10 * (6 + 2) * 3
    by_name = {run.name: run for run in runs}
    paper_runs = grid.load_grid("configs/grids/paper.py")
    assert all(by_name[run.name] == run for run in paper_runs)  # the paper's runs, unchanged
    assert by_name["scan/fire/234054"].overrides == ()
    assert by_name["scan/fire/234054"].config == "configs/base.py:task=scan,pe=fire,seed=234054"
    # Per task: (M, budget) from its longest test prompt and target (randomized_overrides).
    expected = {
        "copy_repeat": (256, 48),
        "copy_repeat_2x": (512, 96),
        "scan": (256, 64),
        "pcfg": (1024, 256),
    }
    for task, (max_position, budget) in expected.items():
        for pe in ("rotary", "t5"):
            run = by_name[f"{task}/{pe}+randomized/146317"]
            assert run.config == f"configs/base.py:task={task},pe={pe},seed=146317"
            # (PCFG's runs also set its training steps: tests/test_paper_grid.py.)
            assert {k: v for k, v in run.overrides if k != "train.num_steps"} == {
                "model.pe.randomized_max_position": max_position,
                "eval.max_new_tokens": budget,
            }
    config = grid.resolve_config(by_name["scan/t5+randomized/256788"])
    assert (config.model.pe.name, config.model.pe.randomized_max_position) == ("t5", 256)
    assert (config.eval.max_new_tokens, config.train.num_steps) == (64, 40_000)
    assert [r.name for r in grid.load_grid("configs/grids/paper.py:tasks=maths,pes=fire")][:3] == [
        "addition/fire/256788",
        "addition/fire/234054",
        "addition/fire/146317",
    ]
    smoke = grid.load_grid("configs/grids/paper.py:smoke=true,pes=,randomized=alibi")
    assert len(smoke) == 30 and smoke[0].config.endswith(",smoke=true")
    # Budgets are capped by the smoke config's 64 new tokens: PCFG gets 64.
    assert dict(smoke[-1].overrides) == {
        "model.pe.randomized_max_position": 512,
        "eval.max_new_tokens": 64,
    }


def test_cpu_mini_grid_adds_runs_with_the_same_settings():
    runs = grid.load_grid("configs/grids/cpu_mini.py:seeds=1,pes=fire,randomized=rotary")
    assert [r.name for r in runs] == [
        "copy_repeat/fire/256788",
        "reverse_2x/fire/256788",
        "addition/fire/256788",
        "copy_repeat/rotary+randomized/256788",
        "reverse_2x/rotary+randomized/256788",
        "addition/rotary+randomized/256788",
    ]
    plain = {r.name: r for r in grid.load_grid("configs/grids/cpu_mini.py:seeds=1")}
    budgets = {"copy_repeat": 32, "reverse_2x": 40, "addition": 16}
    for run in runs:
        task, pe, seed = run.name.split("/")
        baseline = dict(plain[f"{task}/nope/{seed}"].overrides)
        if pe == "fire":
            assert dict(run.overrides) == baseline
            config_schema.validate(grid.resolve_config(run), num_devices=2)
        else:
            assert dict(run.overrides) == {
                **baseline,
                "model.pe.randomized_max_position": 128,
                "eval.max_new_tokens": budgets[task],
            }
    assert len(grid.load_grid("configs/grids/cpu_mini.py:randomized=t5+alibi")) == 45 + 18


def _longest_test_prompt_and_target(task) -> tuple[int, int]:
    """Tokens (words; EOS added to the target) as lenggen.data.tokenizer counts them."""
    return (
        max(len(e.source.split()) for e in task.examples("test")),
        max(len(e.target.split()) + 1 for e in task.examples("test")),
    )


def test_grid_test_lengths_are_the_datasets():
    """The lengths the grids set randomized positions from, recounted (the paper grid's for
    two quick tasks); M then covers every test sequence, as the training loop checks."""
    runs = grid.load_grid("configs/grids/cpu_mini.py:seeds=1,pes=,randomized=t5")
    spec = importlib.util.spec_from_file_location("grid", "configs/grids/cpu_mini.py")
    cpu_mini = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cpu_mini)
    for run in runs:
        config = grid.resolve_config(run)
        task = tasks.get(config.task.name, **config.task.options.to_dict())
        prompt, target = _longest_test_prompt_and_target(task)
        assert cpu_mini.TEST_LENGTHS[task.name] == (prompt, target)
        assert config.model.pe.randomized_max_position >= prompt + target
    spec = importlib.util.spec_from_file_location("grid", "configs/grids/paper.py")
    paper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(paper)
    for name in ("scan", "summation"):
        run = grid.Run("r", f"configs/base.py:task={name}")
        task = tasks.get(name, **grid.resolve_config(run).task.options.to_dict())
        assert paper.TEST_LENGTHS[name] == _longest_test_prompt_and_target(task)


@pytest.mark.parametrize(
    "arg, message",
    [
        (
            "pes=nope+fir",
            r"pes='nope\+fir': unknown positional encoding\(s\) \['fir'\]; expected "
            r"names from nope, ape, t5, alibi, rotary, fire, kerple, cope, abacus, coupling "
            r"joined by '\+'",
        ),
        ("pes=t5++alibi", r"unknown positional encoding\(s\) \[''\]"),
        ("randomized=t5+t5", r"randomized='t5\+t5' repeats \['t5'\]"),
        (
            "randomized=nope+t5",
            r"randomized='nope\+t5': randomized positions change nothing for "
            "nope",
        ),
        ("pes=,randomized=", "pes= and randomized= are both empty"),
    ],
)
@pytest.mark.parametrize("grid_file", ["configs/grids/paper.py", "configs/grids/cpu_mini.py"])
def test_bad_grid_arguments(grid_file, arg, message):
    with pytest.raises(grid.GridError, match=message):
        grid.load_grid(f"{grid_file}:{arg}")


def test_load_grid_errors(tmp_path):
    with pytest.raises(grid.GridError, match="Grid file '.*nope.py' does not exist"):
        grid.load_grid(str(tmp_path / "nope.py"))
    for body, message in (
        ("x = 1\n", "has no get_grid"),
        ("def get_grid(arg):\n    return {}\n", "returned dict {}; expected a non-empty list"),
        (
            "from lenggen import grid\ndef get_grid(arg):\n    return [grid.Run('a', 'c')] * 2\n",
            r"run names must be unique; repeated: \['a'\]",
        ),
    ):
        (tmp_path / "grid.py").write_text(body)
        with pytest.raises(grid.GridError, match=message):
            grid.load_grid(str(tmp_path / "grid.py"))


def test_select_by_glob_patterns():
    runs = grid.product("configs/base.py", ("copy", "scan"), ("nope", "t5"), (1, 2))
    assert [r.name for r in grid.select(runs, "copy/*/1, scan/t5/*")] == [
        "copy/nope/1",
        "copy/t5/1",
        "scan/t5/1",
        "scan/t5/2",
    ]
    assert grid.select(runs, None) == runs
    with pytest.raises(
        grid.GridError,
        match=r"--only pattern 'copy/alibi/\*' matches no run. "
        r"Run names are <task>/<pe>/<seed>, e.g. copy/nope/1",
    ):
        grid.select(runs, "copy/*/1,copy/alibi/*")


@pytest.mark.parametrize(
    "run, message",
    [
        (
            grid.Run("a/b/1", "configs/base.py:task=copy", (("train.nonsense", 1),)),
            r"Run a/b/1 \(configs/base.py:task=copy\): .*nonsense",
        ),
        (
            grid.Run("a/b/1", "configs/base.py:task=copy", (("train.num_steps", "many"),)),
            "invalid literal for int",
        ),
        (grid.Run("a/b/1", "configs/base.py:task=kopy"), "Unknown task 'kopy'. Valid tasks:"),
        (
            grid.Run("a/b/1", "configs/missing.py:task=copy"),
            "config file .*missing.py' does not exist .*relative to the repository",
        ),
    ],
)
def test_resolve_config_reports_bad_runs(run, message):
    with pytest.raises(grid.GridError, match=message):
        grid.resolve_config(run)


def test_plan_skips_complete_runs_resumes_partial_ones_and_refuses_conflicts(tmp_path):
    runs = grid.product("configs/base.py", ("copy",), ("nope",), (1, 2, 3), args={"smoke": True})
    _complete(runs[1], tmp_path / "copy/nope/2", results=False)
    _complete(runs[2], tmp_path / "copy/nope/3")
    assert [(p.run.name, p.status) for p in sweep.plan(runs, str(tmp_path))] == [
        ("copy/nope/1", "new"),
        ("copy/nope/2", "resume"),
        ("copy/nope/3", "done"),
    ]

    # A key outside training (evaluation batch) may change; a training key may not.
    path = tmp_path / "copy/nope/3/config.json"
    saved = json.loads(path.read_text())
    saved["eval"]["batch_size"] = 4
    path.write_text(json.dumps(saved))
    assert sweep.plan(runs, str(tmp_path))[2].status == "done"
    saved["train"]["num_steps"] = 99
    path.write_text(json.dumps(saved))
    with pytest.raises(
        sweep.SweepError,
        match=r"1 workdir\(s\) hold a different experiment: "
        r".*copy/nope/3 \(differs in train.num_steps\)",
    ):
        sweep.plan(runs, str(tmp_path))


def test_print_mode_prints_pending_commands_only(tmp_path):
    runs = grid.select(grid.load_grid("configs/grids/cpu_mini.py"), "addition/*/256788")
    _complete(runs[0], tmp_path / "addition/nope/256788")
    result = _cli(
        "--grid=configs/grids/cpu_mini.py",
        f"--runs_dir={tmp_path}",
        "--mode=print",
        "--only=addition/*/256788",
    )
    assert result.returncode == 0, result.stderr
    assert "# 4 of 5 runs to launch (1 complete)" in result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines()]
    assert [words[3] for words in commands] == [
        f"--config=configs/base.py:task=addition,pe={pe},seed=256788"
        for pe in paper.PAPER_PE_ORDER[1:]
    ]  # the grid's order; NoPE's run is complete
    for words, run in zip(commands, runs[1:], strict=True):
        assert words == [
            "python",
            "-m",
            "lenggen.main",
            f"--config={run.config}",
            f"--workdir={tmp_path}/{run.name}",
            *run.override_flags(),
        ]
    assert "--config.train.num_steps=2000" in commands[0]  # addition's own number of steps
    bad = _cli("--grid=configs/grids/cpu_mini.py", "--mode=print", "--only=kopy/*/*")
    assert bad.returncode == 2 and "--only pattern 'kopy/*/*' matches no run" in bad.stderr


def test_help_lists_the_sweep_flags():
    result = _cli("--help")  # absl prints the help and exits 1
    assert "Runs a grid of experiments" in result.stdout, result.stderr
    for flag in (
        "--grid",
        "--runs_dir",
        "--mode",
        "--only",
        "--parallel",
        "--task_index",
        "--expect_grid",
        "--[no]jax_cache",
    ):
        assert f"  {flag}:" in result.stdout, flag


# ---------------------------------------------------------------- SLURM job arrays


@pytest.mark.parametrize(
    "indices, spec",
    [
        ([0], "0"),
        ([0, 1, 2, 5, 7, 8], "0-2,5,7-8"),
        ([3, 4], "3-4"),
        ([1, 3, 5], "1,3,5"),
        (list(range(150)), "0-149"),
    ],
)
def test_array_spec_writes_consecutive_indices_as_ranges(indices, spec):
    assert sweep.array_spec(indices) == spec
    expanded = [
        i
        for part in spec.split(",")
        for i in range(int(part.split("-")[0]), int(part.split("-")[-1]) + 1)
    ]
    assert expanded == indices  # the round trip


def test_slurm_mode_submits_an_array_of_the_pending_runs_only(tmp_path):
    runs = grid.select(grid.load_grid("configs/grids/cpu_mini.py"), "addition/*/256788")
    _complete(runs[1], tmp_path / runs[1].name)
    _complete(runs[3], tmp_path / runs[3].name)
    _complete(runs[4], tmp_path / runs[4].name, results=False)  # resumable
    result = _cli(
        "--grid=configs/grids/cpu_mini.py",
        f"--runs_dir={tmp_path}",
        "--mode=slurm",
        "--only=addition/*/256788",
        "--parallel=2",
    )
    assert result.returncode == 0, result.stderr
    assert "# 3 of 5 runs to submit (2 complete)" in result.stderr
    (words,) = [shlex.split(line) for line in result.stdout.splitlines()]
    assert words == [
        "sbatch",
        "--array=0,2,4%2",
        "launch/slurm_sweep.sbatch",
        "--grid=configs/grids/cpu_mini.py",
        f"--runs_dir={tmp_path}",
        "--only=addition/*/256788",
        f"--expect_grid={sweep.grid_digest(runs)}",
    ]
    assert re.fullmatch(r"[0-9a-f]{12}", sweep.grid_digest(runs))
    assert sweep.grid_digest(runs[::-1]) != sweep.grid_digest(runs)
    for index in range(5):
        _complete(runs[index], tmp_path / runs[index].name)
    done = _cli(
        "--grid=configs/grids/cpu_mini.py",
        f"--runs_dir={tmp_path}",
        "--mode=slurm",
        "--only=addition/*/256788",
    )
    assert done.returncode == 0 and done.stdout == ""
    assert "# 0 of 5 runs to submit (5 complete)" in done.stderr


def test_task_index_runs_one_run_of_the_array(tmp_path):
    selection = [
        "--grid=configs/grids/cpu_mini.py",
        f"--runs_dir={tmp_path}",
        "--only=addition/*/256788",
    ]
    runs = grid.select(grid.load_grid("configs/grids/cpu_mini.py"), "addition/*/256788")
    digest = f"--expect_grid={sweep.grid_digest(runs)}"
    _complete(runs[1], tmp_path / runs[1].name)
    printed = _cli(*selection, "--mode=print", "--task_index=2", digest)
    assert printed.returncode == 0, printed.stderr
    assert shlex.split(printed.stdout) == [
        "python",
        "-m",
        "lenggen.main",
        f"--config={runs[2].config}",
        f"--workdir={tmp_path}/{runs[2].name}",
        *runs[2].override_flags(),
    ]
    complete = _cli(*selection, "--task_index=1", digest)  # mode local: would exec lenggen.main
    assert complete.returncode == 0, complete.stderr
    assert complete.stdout == (
        f"{runs[1].name}: complete ({tmp_path}/{runs[1].name}/results.json); nothing to run.\n"
    )
    for args, message in (
        (("--task_index=5",), r"--task_index=5: expected 0 <= index < 5"),
        (
            ("--task_index=0", "--expect_grid=000000000000"),
            r"the grid's runs changed since this array was submitted \(digest [0-9a-f]{12}, "
            r"expected 000000000000\): submit it again.",
        ),
        (("--task_index=0", "--mode=slurm"), "--task_index runs one run"),
    ):
        bad = _cli(*selection, *args)
        assert bad.returncode == 2 and re.search(message, bad.stderr), bad.stderr


def test_task_index_becomes_lenggen_main(tmp_path):
    """The task's process is replaced by lenggen.main: its own checks, message and exit status
    (here a mesh for 3 devices on 2: main's exit 2, before any data is built)."""
    grid_file = tmp_path / "grid.py"
    grid_file.write_text(
        "from lenggen import grid\n\ndef get_grid(arg=None):\n"
        "    return grid.product('configs/base.py', ('copy',), ('nope',), (1,), "
        "args={'smoke': True}, overrides={'mesh.shape': (3, 1)})\n"
    )
    result = _cli(f"--grid={grid_file}", f"--runs_dir={tmp_path / 'runs'}", "--task_index=0")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.startswith(f"copy/nope/1 (new): {sys.executable} -m lenggen.main ")
    assert result.stderr.startswith(
        "lenggen: config.mesh.shape=(3, 1) needs 3 devices but 2 are available."
    ), result.stderr
    assert (tmp_path / "runs/copy/nope/1").is_dir()


def test_run_status_is_the_one_completion_check(tmp_path):
    run = grid.product("configs/base.py", ("copy",), ("nope",), (1,), args={"smoke": True})[0]
    config = json.loads(grid.resolve_config(run).to_json())
    workdir = str(tmp_path / run.name)
    assert sweep.run_status(workdir, config) == ("new", "")
    _complete(run, workdir, results=False)
    assert sweep.run_status(workdir, config) == ("resume", "")
    _complete(run, workdir)
    assert sweep.run_status(workdir, config) == ("done", "")
    config["train"]["num_steps"] += 1
    assert sweep.run_status(workdir, config) == ("conflict", "train.num_steps")


# ---------------------------------------------------------------- the local runner

# Stand-ins for `python -m lenggen.main` (the real one runs in tests/test_report.py's sweep).
SUCCEED = [sys.executable, "-c", "import time; print('training'); time.sleep(1.0)"]
FAIL = [sys.executable, "-c", "import sys; print('loss is nan'); sys.exit(3)"]


def _planned(tmp_path, count: int) -> list[sweep.Planned]:
    runs = grid.product("configs/base.py", ("copy",), ("nope",), range(1, count + 1))
    return [sweep.Planned(run, str(tmp_path / run.name), "new") for run in runs]


def test_run_local_reports_progress_eta_and_failures(tmp_path):
    planned = _planned(tmp_path, 4)
    planned[0] = dataclasses.replace(planned[0], status="done")
    out = io.StringIO()
    status = sweep.run_local(
        planned, out=out, argv_for=lambda p: FAIL if p.run.name == "copy/nope/3" else SUCCEED
    )
    text = out.getvalue()
    assert status == sweep.EXIT_FAILED, text
    assert text.startswith(
        "Sweep: 4 runs, 1 complete (skipped), 3 to run, 1 at a time.\n"
        "[start 1/3] copy/nope/2 (new)\n"
    )
    first = re.search(r"\[1/3\] copy/nope/2: ok in (\d+) s; 2 left, ETA (\d+) s", text)
    assert first, text
    # ETA = mean wall time of the finished runs x runs left / runs at a time.
    assert abs(int(first[2]) - 2 * int(first[1])) <= 1
    assert "[2/3] copy/nope/3: FAILED (exit 3: diverged) in 0 s; 1 left, ETA " in text
    assert f"---- last lines of {tmp_path}/copy/nope/3/sweep.log\n" in text
    assert "loss is nan" in text  # the failed run's log tail
    assert re.search(r"\[3/3\] copy/nope/4: ok in \d+ s; 0 left\n", text)
    assert text.endswith("Sweep finished: 2 succeeded, 1 failed: copy/nope/3.\n")
    assert not (tmp_path / "copy/nope/1").exists()  # the complete run was not started
    log = (tmp_path / "copy/nope/2/sweep.log").read_text()
    assert log.startswith("\n==== ") and shlex.join(SUCCEED) in log and "training\n" in log


def test_run_local_runs_in_parallel(tmp_path):
    out = io.StringIO()
    started = time.monotonic()
    assert (
        sweep.run_local(_planned(tmp_path, 4), parallel=2, out=out, argv_for=lambda p: SUCCEED) == 0
    )
    elapsed = time.monotonic() - started
    lines = out.getvalue().splitlines()
    assert lines[1:3] == ["[start 1/4] copy/nope/1 (new)", "[start 2/4] copy/nope/2 (new)"]
    assert re.fullmatch(r"\[1/4\] copy/nope/\d: ok in 1 s; 3 left, ETA 2 s", lines[3]), lines
    assert 2.0 <= elapsed < 3.9  # two waves of 1 s runs, not four
    with pytest.raises(sweep.SweepError, match="--parallel=0: expected a positive number"):
        sweep.run_local([], parallel=0)


def test_child_environment_adds_the_shared_compilation_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    env = sweep.child_environment(str(tmp_path), jax_cache=True)
    assert env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / ".jax_cache")
    assert "JAX_COMPILATION_CACHE_DIR" not in sweep.child_environment(str(tmp_path), False)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/elsewhere")
    assert sweep.child_environment(str(tmp_path), True)["JAX_COMPILATION_CACHE_DIR"] == "/elsewhere"


def test_sigterm_stops_the_sweep_and_its_runs(tmp_path):
    """The real command line: SIGTERM reaches the sweep, which stops its run and exits 75."""
    grid_file = tmp_path / "grid.py"
    grid_file.write_text(
        "from lenggen import grid\n\ndef get_grid(arg=None):\n"
        "    return grid.product('configs/base.py', ('copy_repeat',), ('nope',), "
        "(1, 2), args={'smoke': True})\n"
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lenggen.sweep",
            f"--grid={grid_file}",
            f"--runs_dir={tmp_path / 'r'}",
        ],
        cwd=REPO,
        env=CHILD_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = [process.stdout.readline()]
    while "[start" not in lines[-1] and lines[-1]:
        lines.append(process.stdout.readline())
    process.send_signal(signal.SIGTERM)
    out = "".join(lines) + process.communicate(timeout=60)[0]
    assert process.returncode == sweep.EXIT_INTERRUPTED, out
    # Stopped while starting up (-15), or checkpointed if it was already training (75).
    assert re.search(
        r"\[1/2\] copy_repeat/nope/1: FAILED \(exit (-15: stopped by SIGTERM|"
        r"75: preempted)\)",
        out,
    ), out
    assert "Interrupted after 0 successful run(s); 1 not started. Rerun the same command" in out


# ---------------------------------------------------------------- a real sweep beyond the paper

BEYOND_GRID = """
import dataclasses
import importlib.util

_spec = importlib.util.spec_from_file_location("paper_grid", {paper!r})
_paper = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_paper)
# Smoke runs made smaller still: 1 layer, 2 steps, short sequences, scored by teacher forcing.
FAST = (("model.num_layers", 1), ("train.num_steps", 2), ("train.log_every", 2),
        ("train.eval_every", 2), ("train.checkpoint_every", 2), ("eval.metric", "teacher_forced"),
        ("task.options.max_train_length", 4), ("task.options.max_test_length", 7),
        ("data.dir", {data_dir!r}))
NAMES = ("copy_repeat/fire/256788", "copy_repeat/rotary+randomized/256788")


def get_grid(arg=None):
    runs = _paper.get_grid("smoke=true,pes=fire,randomized=rotary")
    return [dataclasses.replace(run, overrides=run.overrides + FAST)
            for run in runs if run.name in NAMES]
"""


def test_real_sweep_of_fire_and_randomized_positions(tmp_path):
    """The paper grid's FIRE and rotary+randomized runs of Copy-Repeat, through the command
    lines of the sweep and the report."""
    grid_file = tmp_path / "grid.py"
    grid_file.write_text(
        BEYOND_GRID.format(
            paper=os.path.join(REPO, "configs/grids/paper.py"), data_dir=str(tmp_path / "data")
        )
    )
    env = dict(
        CHILD_ENV,
        XLA_FLAGS="--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0",
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lenggen.sweep",
            f"--grid={grid_file}",
            f"--runs_dir={tmp_path / 'runs'}",
            "--parallel=2",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.endswith("Sweep finished: 2 succeeded, 0 failed.\n")
    workdir = tmp_path / "runs/copy_repeat/rotary+randomized/256788"
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"]["pe"]["name"] == "rotary"
    assert config["model"]["pe"]["randomized_max_position"] == 256
    assert config["eval"]["max_new_tokens"] == 48
    assert json.loads((workdir / "results.json").read_text())["pe"] == "rotary"
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "lenggen.report",
            str(tmp_path / "runs"),
            f"--out={tmp_path / 'out'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    payload = json.loads((tmp_path / "out/report.json").read_text())
    assert payload["pes"] == ["fire", "rotary+randomized"]
    assert set(payload["ood_test"]["copy_repeat"]) == {"fire", "rotary+randomized"}
    assert "| task | FIRE | Rotary+randomized |" in (tmp_path / "out/report.md").read_text()
