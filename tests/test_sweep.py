"""The sweep: grids (the paper's and the CPU one), run selection, the config each run gets, the
skip/resume/conflict decision, the printed commands, and the local runner (progress, ETA,
failures, parallel runs, SIGTERM). tests/test_report.py runs a real sweep end to end."""

import dataclasses
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

from lenggen import config_schema, sweep, tasks

# ml_collections loads config files with importlib's deprecated load_module().
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_SEEDS = (256788, 234054, 146317)
PAPER_PES = {"nope", "ape", "t5", "alibi", "rotary"}
CHILD_ENV = dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0",
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lenggen.sweep", *args], cwd=REPO, env=CHILD_ENV,
                          capture_output=True, text=True, timeout=300)


def _complete(run: sweep.Run, workdir: str, results: bool = True) -> None:
    """Leaves `workdir` as lenggen.main does: config.json (workdir.claim), results.json."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as handle:
        handle.write(sweep.resolve_config(run).to_json())
    if results:
        with open(os.path.join(workdir, "results.json"), "w") as handle:
            json.dump({"splits": {}}, handle)


# ---------------------------------------------------------------- grids and configs


def test_product_names_runs_and_passes_overrides_as_main_parses_them():
    runs = sweep.product(
        "configs/base.py", ("copy", "reverse"), ("nope", "t5"), (1, 2), args={"smoke": True},
        overrides={"train.num_steps": 5, "mesh.shape": (2, 1)},
        task_overrides={"reverse": {"train.num_steps": 7, "train.learning_rate": 1e-05}},
    )
    assert [r.name for r in runs] == [
        "copy/nope/1", "copy/nope/2", "copy/t5/1", "copy/t5/2",
        "reverse/nope/1", "reverse/nope/2", "reverse/t5/1", "reverse/t5/2",
    ]
    assert runs[0].config == "configs/base.py:task=copy,pe=nope,seed=1,smoke=true"
    run = runs[6]
    assert run.flags("w") == [
        "--config=configs/base.py:task=reverse,pe=t5,seed=1,smoke=true", "--workdir=w",
        "--config.train.num_steps=7", "--config.mesh.shape=(2, 1)",
        "--config.train.learning_rate=1e-05",
    ]
    config = sweep.resolve_config(run)
    assert (config.task.name, config.model.pe.name, config.seed) == ("reverse", "t5", 1)
    assert config.train.num_steps == 7 and config.train.learning_rate == 1e-05
    assert tuple(config.mesh.shape) == (2, 1)
    assert config.model.d_model == 32  # smoke=true reached the config file
    assert sweep.resolve_config(runs[0]).train.num_steps == 5


def test_product_rejects_unknown_names():
    with pytest.raises(sweep.SweepError, match=r"Unknown task\(s\) \['kopy'\] in the grid. "
                                               r"Valid: addition, copy, "):
        sweep.product("configs/base.py", ("copy", "kopy"), ("nope",), (1,))
    with pytest.raises(sweep.SweepError, match=r"Unknown positional encoding\(s\) \['nape'\].*"
                                               r"Valid: nope, ape, t5, alibi, rotary"):
        sweep.product("configs/base.py", ("copy",), ("nape",), (1,))
    with pytest.raises(sweep.SweepError, match=r"task_overrides names \['scan'\], not in"):
        sweep.product("configs/base.py", ("copy",), ("nope",), (1,),
                      task_overrides={"scan": {"train.num_steps": 1}})


def test_paper_grid_is_ten_tasks_by_five_pes_by_three_seeds_of_the_base_recipe():
    runs = sweep.load_grid("configs/grids/paper.py")
    main_tasks = ["copy_repeat", "copy_repeat_2x", "copy_repeat_change", "copy", "copy_2x",
                  "reverse", "reverse_2x", "reverse_copy", "scan", "pcfg"]
    assert len(runs) == 150
    assert {tuple(r.name.split("/")) for r in runs} == {
        (t, p, str(s)) for t in main_tasks for p in PAPER_PES for s in PAPER_SEEDS}
    for run in runs:
        task, pe, seed = run.name.split("/")
        assert run.config == f"configs/base.py:task={task},pe={pe},seed={seed}"
        assert run.overrides == ()
        config = sweep.resolve_config(run)
        assert (config.task.name, config.model.pe.name, config.seed) == (task, pe, int(seed))
        assert (config.train.num_steps, config.model.num_layers) == (40_000, 12)
    maths = sweep.load_grid("configs/grids/paper.py:tasks=maths")
    assert len(maths) == 120 and {r.name.split("/")[0] for r in maths} == {
        "addition", "polynomial", "sort_single_token", "sort_multi_digit", "summation",
        "parity", "lego", "lego_shuffled"}
    assert len(sweep.load_grid("configs/grids/paper.py:tasks=all")) == 270
    with pytest.raises(sweep.SweepError, match="tasks='bogus': expected one of main, maths, all"):
        sweep.load_grid("configs/grids/paper.py:tasks=bogus")


def test_cpu_mini_grid_is_valid_for_two_devices_with_twice_the_training_lengths():
    runs = sweep.load_grid("configs/grids/cpu_mini.py")
    assert len(runs) == 45
    assert {tuple(r.name.split("/")) for r in runs} == {
        (t, p, str(s)) for t in ("copy_repeat", "reverse_2x", "addition") for p in PAPER_PES
        for s in PAPER_SEEDS}
    built = {}
    for run in runs:
        config = sweep.resolve_config(run)
        config_schema.validate(config, num_devices=2)
        assert (config.model.num_layers, config.model.d_model, config.train.batch_size) == (
            2, 128, 64)
        if config.task.name not in built:
            built[config.task.name] = tasks.get(config.task.name, **config.task.options.to_dict())
    for name, (train_max, test) in {"copy_repeat": (8, range(9, 17)),
                                    "reverse_2x": (8, range(9, 17)),
                                    "addition": (4, range(5, 9))}.items():
        assert max(built[name].lengths("train")) == train_max
        assert sorted(built[name].lengths("test")) == list(test)
    assert len(sweep.load_grid("configs/grids/cpu_mini.py:seeds=1")) == 15


def test_load_grid_errors(tmp_path):
    with pytest.raises(sweep.SweepError, match="Grid file '.*nope.py' does not exist"):
        sweep.load_grid(str(tmp_path / "nope.py"))
    for body, message in (
        ("x = 1\n", "has no get_grid"),
        ("def get_grid(arg):\n    return {}\n", "returned dict {}; expected a non-empty list"),
        ("from lenggen import sweep\ndef get_grid(arg):\n    return [sweep.Run('a', 'c')] * 2\n",
         r"run names must be unique; repeated: \['a'\]"),
    ):
        (tmp_path / "grid.py").write_text(body)
        with pytest.raises(sweep.SweepError, match=message):
            sweep.load_grid(str(tmp_path / "grid.py"))


def test_select_by_glob_patterns():
    runs = sweep.product("configs/base.py", ("copy", "scan"), ("nope", "t5"), (1, 2))
    assert [r.name for r in sweep.select(runs, "copy/*/1, scan/t5/*")] == [
        "copy/nope/1", "copy/t5/1", "scan/t5/1", "scan/t5/2"]
    assert sweep.select(runs, None) == runs
    with pytest.raises(sweep.SweepError, match=r"--only pattern 'copy/alibi/\*' matches no run. "
                       r"Run names are <task>/<pe>/<seed>, e.g. copy/nope/1"):
        sweep.select(runs, "copy/*/1,copy/alibi/*")


@pytest.mark.parametrize("run, message", [
    (sweep.Run("a/b/1", "configs/base.py:task=copy", (("train.nonsense", 1),)),
     r"Run a/b/1 \(configs/base.py:task=copy\): .*nonsense"),
    (sweep.Run("a/b/1", "configs/base.py:task=copy", (("train.num_steps", "many"),)),
     "invalid literal for int"),
    (sweep.Run("a/b/1", "configs/base.py:task=kopy"), "Unknown task 'kopy'. Valid tasks:"),
    (sweep.Run("a/b/1", "configs/missing.py:task=copy"), "config file .*missing.py' does not "
                                                          "exist .*relative to the repository"),
])
def test_resolve_config_reports_bad_runs(run, message):
    with pytest.raises(sweep.SweepError, match=message):
        sweep.resolve_config(run)


def test_plan_skips_complete_runs_resumes_partial_ones_and_refuses_conflicts(tmp_path):
    runs = sweep.product("configs/base.py", ("copy",), ("nope",), (1, 2, 3),
                         args={"smoke": True})
    _complete(runs[1], tmp_path / "copy/nope/2", results=False)
    _complete(runs[2], tmp_path / "copy/nope/3")
    assert [(p.run.name, p.status) for p in sweep.plan(runs, str(tmp_path))] == [
        ("copy/nope/1", "new"), ("copy/nope/2", "resume"), ("copy/nope/3", "done")]

    # A key outside training (evaluation batch) may change; a training key may not.
    path = tmp_path / "copy/nope/3/config.json"
    saved = json.loads(path.read_text())
    saved["eval"]["batch_size"] = 4
    path.write_text(json.dumps(saved))
    assert sweep.plan(runs, str(tmp_path))[2].status == "done"
    saved["train"]["num_steps"] = 99
    path.write_text(json.dumps(saved))
    with pytest.raises(sweep.SweepError, match=r"1 workdir\(s\) hold a different experiment: "
                                               r".*copy/nope/3 \(differs in train.num_steps\)"):
        sweep.plan(runs, str(tmp_path))


def test_print_mode_prints_pending_commands_only(tmp_path):
    runs = sweep.select(sweep.load_grid("configs/grids/cpu_mini.py"), "addition/*/256788")
    _complete(runs[0], tmp_path / "addition/nope/256788")
    result = _cli("--grid=configs/grids/cpu_mini.py", f"--runs_dir={tmp_path}", "--mode=print",
                  "--only=addition/*/256788")
    assert result.returncode == 0, result.stderr
    assert "# 4 of 5 runs to launch (1 complete)" in result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines()]
    assert [words[3] for words in commands] == [
        f"--config=configs/base.py:task=addition,pe={pe},seed=256788"
        for pe in ("ape", "t5", "alibi", "rotary")]
    for words, run in zip(commands, runs[1:], strict=True):
        assert words == ["python", "-m", "lenggen.main", f"--config={run.config}",
                         f"--workdir={tmp_path}/{run.name}", *run.override_flags()]
    assert "--config.train.num_steps=2000" in commands[0]  # addition's own number of steps
    bad = _cli("--grid=configs/grids/cpu_mini.py", "--mode=print", "--only=kopy/*/*")
    assert bad.returncode == 2 and "--only pattern 'kopy/*/*' matches no run" in bad.stderr


# ---------------------------------------------------------------- the local runner

# Stand-ins for `python -m lenggen.main` (the real one runs in tests/test_report.py's sweep).
SUCCEED = [sys.executable, "-c", "import time; print('training'); time.sleep(1.0)"]
FAIL = [sys.executable, "-c", "import sys; print('loss is nan'); sys.exit(3)"]


def _planned(tmp_path, count: int) -> list[sweep.Planned]:
    runs = sweep.product("configs/base.py", ("copy",), ("nope",), range(1, count + 1))
    return [sweep.Planned(run, str(tmp_path / run.name), "new") for run in runs]


def test_run_local_reports_progress_eta_and_failures(tmp_path):
    planned = _planned(tmp_path, 4)
    planned[0] = dataclasses.replace(planned[0], status="done")
    out = io.StringIO()
    status = sweep.run_local(planned, out=out,
                             argv_for=lambda p: FAIL if p.run.name == "copy/nope/3" else SUCCEED)
    text = out.getvalue()
    assert status == sweep.EXIT_FAILED, text
    assert text.startswith("Sweep: 4 runs, 1 complete (skipped), 3 to run, 1 at a time.\n"
                           "[start 1/3] copy/nope/2 (new)\n")
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
    assert sweep.run_local(_planned(tmp_path, 4), parallel=2, out=out,
                           argv_for=lambda p: SUCCEED) == 0
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
    grid = tmp_path / "grid.py"
    grid.write_text("from lenggen import sweep\n\ndef get_grid(arg=None):\n"
                    "    return sweep.product('configs/base.py', ('copy_repeat',), ('nope',), "
                    "(1, 2), args={'smoke': True})\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "lenggen.sweep", f"--grid={grid}", f"--runs_dir={tmp_path / 'r'}"],
        cwd=REPO, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [process.stdout.readline()]
    while "[start" not in lines[-1] and lines[-1]:
        lines.append(process.stdout.readline())
    process.send_signal(signal.SIGTERM)
    out = "".join(lines) + process.communicate(timeout=60)[0]
    assert process.returncode == sweep.EXIT_INTERRUPTED, out
    # Stopped while starting up (-15), or checkpointed if it was already training (75).
    assert re.search(r"\[1/2\] copy_repeat/nope/1: FAILED \(exit (-15: stopped by SIGTERM|"
                     r"75: preempted)\)", out), out
    assert "Interrupted after 0 successful run(s); 1 not started. Rerun the same command" in out
