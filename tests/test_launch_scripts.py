"""The launch scripts: valid bash, `--dry-run` prints exactly the commands they would run
(parsed back with shlex), executing nothing (no gcloud, srun, scontrol or python is called);
the pinned versions they install, and the lock that builds one environment at a time."""

import importlib.metadata
import os
import re
import shlex
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = (
    "launch/multiprocess_local.sh",
    "launch/tpu_vm.sh",
    "launch/tpu_worker.sh",
    "launch/slurm_gpu.sbatch",
    "launch/slurm_sweep.sbatch",
    "launch/lock.sh",
    "launch/local.sh",
    "launch/test.sh",
)


def _dry_run(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    # A PATH without gcloud/srun/python: a dry run that tried to run one would fail loudly.
    clean = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run(
        ["bash", os.path.join(REPO, script), *args],
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        timeout=30,
    )


def _commands(stdout: str) -> list[list[str]]:
    """The printed commands (comment lines dropped), split as a shell would."""
    return [shlex.split(line) for line in stdout.splitlines() if not line.startswith("#")]


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_valid_bash_and_executable(script):
    path = os.path.join(REPO, script)
    assert subprocess.run(["bash", "-n", path], capture_output=True).returncode == 0
    assert os.access(path, os.X_OK)


def test_multiprocess_local_prints_one_command_per_process_with_distinct_ids():
    result = _dry_run(
        "launch/multiprocess_local.sh",
        "--dry-run",
        "3",
        "configs/base.py:task=copy,pe=t5,smoke=true",
        "/tmp/mp run",
        "--config.mesh.shape=(-1, 1)",
        LENGGEN_COORDINATOR_PORT="23456",
    )
    assert result.returncode == 0, result.stderr
    commands = _commands(result.stdout)
    assert len(commands) == 3
    for process_id, words in enumerate(commands):
        assert words[:4] == [
            "XLA_FLAGS=--xla_force_host_platform_device_count=2",
            "python",
            "-m",
            "lenggen.main",
        ]
        assert words[4:] == [
            "--config=configs/base.py:task=copy,pe=t5,smoke=true",
            "--workdir=/tmp/mp run",
            "--config.mesh.shape=(-1, 1)",
            "--coordinator_address=127.0.0.1:23456",
            "--num_processes=3",
            f"--process_id={process_id}",
        ]


def test_multiprocess_local_defaults_keep_xla_flags_and_reject_a_bad_count():
    result = _dry_run(
        "launch/multiprocess_local.sh",
        "2",
        "--dry-run",
        XLA_FLAGS="--xla_cpu_enable_fast_math=false",
    )
    assert result.returncode == 0, result.stderr
    commands = _commands(result.stdout)
    assert [words[0] for words in commands] == [
        "XLA_FLAGS=--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=2"
    ] * 2
    assert commands[1][4:6] == [
        "--config=configs/quickstart.py",
        "--workdir=runs/quickstart-multiprocess",
    ]
    assert commands[1][-1] == "--process_id=1"
    bad = _dry_run("launch/multiprocess_local.sh", "--dry-run", "two")
    assert bad.returncode == 2 and "N: number of processes, got 'two'" in bad.stderr


# ---------------------------------------------------------------- Cloud TPU VMs

TPU = ["gcloud", "compute", "tpus", "tpu-vm"]


def test_tpu_pod_slice_runs_every_worker_on_a_bucket():
    result = _dry_run(
        "launch/tpu_vm.sh",
        "--dry-run",
        "--name=lg",
        "--zone=us-central2-b",
        "--accelerator-type=v4-32",
        "--spot",
        "--delete",
        "configs/base.py:task=scan,pe=nope",
        "gs://bkt/runs/scan/nope/256788",
        "--config.train.num_steps=10",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "# TPU VM lg (v4-32: 4 worker(s), tpu-ubuntu2204-base) in us-central2-b\n"
    )
    where = ["--zone=us-central2-b"]
    assert _commands(result.stdout) == [
        TPU + ["describe", "lg"] + where + ["--format=value(state)"],
        TPU
        + ["create", "lg"]
        + where
        + ["--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot"],
        TPU + ["delete", "lg"] + where + ["--quiet"],  # only if preempted, then create again
        [
            "tar",
            "czf",
            "/tmp/lenggen-src.tgz",
            "setup.py",
            "README.md",
            "lenggen",
            "configs",
            "launch",
            "requirements",
        ],
        TPU + ["scp", "/tmp/lenggen-src.tgz", "lg:lenggen-src.tgz"] + where + ["--worker=all"],
        # The pinned environment, built once per VM by the worker script (no pip --upgrade).
        TPU
        + ["ssh", "lg"]
        + where
        + [
            "--worker=all",
            "--command=mkdir -p ~/lenggen && tar xzf "
            "~/lenggen-src.tgz -C ~/lenggen && "
            "~/lenggen/launch/tpu_worker.sh",
        ],
        # Every worker runs the same command; jax.distributed finds the slice by itself.
        TPU
        + ["ssh", "lg"]
        + where
        + [
            "--worker=all",
            "--command=cd ~/lenggen && source .venv/bin/activate && python -m lenggen.main "
            "--config=configs/base.py:task=scan,pe=nope --workdir=gs://bkt/runs/scan/nope/256788 "
            "--config.train.num_steps=10",
        ],
        # Results stay in the bucket: nothing to copy back.
        TPU + ["delete", "lg"] + where + ["--quiet"],
    ]
    assert "upgrade" not in result.stdout


def test_tpu_single_worker_may_keep_a_local_workdir_and_gets_its_results_back():
    result = _dry_run(
        "launch/tpu_vm.sh",
        "--dry-run",
        "--name=lg",
        "--project=p",
        "--accelerator-type=v5litepod-8",
        "configs/base.py",
        "runs/a b",
    )
    assert result.returncode == 0, result.stderr
    commands = _commands(result.stdout)
    where = ["--zone=us-central2-b", "--project=p"]
    assert commands[1] == TPU + ["create", "lg"] + where + [
        "--accelerator-type=v5litepod-8",
        "--version=v2-alpha-tpuv5-lite",
    ]
    assert commands[-3] == TPU + ["ssh", "lg"] + where + [
        "--worker=0",
        "--command=cd ~/lenggen && tar czf ~/lenggen-results.tgz "
        "--exclude=checkpoints --exclude=best 'runs/a b'",
    ]
    assert commands[-2] == TPU + [
        "scp",
        "lg:lenggen-results.tgz",
        "/tmp/lenggen-results.tgz",
    ] + where + ["--worker=0"]
    assert commands[-1] == ["tar", "xzf", "/tmp/lenggen-results.tgz", "-C", "."]


@pytest.mark.parametrize(
    "accelerator, workdir, message",
    [
        (
            "v4-16",
            "runs/x",
            "v4-16 has 2 workers, which must share one workdir: WORKDIR must be "
            "gs://BUCKET/PATH, got 'runs/x'.",
        ),
        ("v6e-64", "runs/x", "v6e-64 has 16 workers, which must share one workdir"),
        ("v5p-128", "/abs", "v5p-128 has 16 workers"),
        (
            "tpu7x-64",
            "runs/x",
            "tpu7x-64 has an unknown number of workers, which must share one workdir",
        ),
        (
            "v4-8",
            "/abs/dir",
            "WORKDIR must be relative (it lives under ~/lenggen on the worker) or "
            "gs://, got '/abs/dir'.",
        ),
    ],
)
def test_tpu_refuses_a_workdir_the_workers_cannot_share(accelerator, workdir, message):
    result = _dry_run(
        "launch/tpu_vm.sh",
        "--dry-run",
        f"--accelerator-type={accelerator}",
        "configs/base.py",
        workdir,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


def _lock_python_version() -> str:
    with open(os.path.join(REPO, "requirements/lock.txt")) as handle:
        return re.search(r"with Python (\S+) on", handle.read())[1]


def test_tpu_worker_pins_the_python_the_lock_was_made_with():
    with open(os.path.join(REPO, "launch/tpu_worker.sh")) as handle:
        text = handle.read()
    assert re.search(r"^PYTHON_VERSION=(\S+)$", text, re.M)[1] == _lock_python_version()
    uv = re.search(r"^UV_VERSION=(\S+)$", text, re.M)[1]
    assert re.fullmatch(r"\d+\.\d+\.\d+", uv)
    assert "https://astral.sh/uv/$UV_VERSION/install.sh" in text
    assert "LENGGEN_ACCELERATOR=tpu" in text and "source launch/env.sh" in text


# ---------------------------------------------------------------- pinned versions


def _pins(path: str) -> dict[str, str]:
    with open(os.path.join(REPO, path)) as handle:
        lines = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.+-]+", line) for line in lines), lines
    return {
        name.lower().replace("_", "-"): version
        for name, version in (line.split("==") for line in lines)
    }


def test_the_lock_pins_every_package_and_the_accelerators_match_its_jax():
    lock = _pins("requirements/lock.txt")
    for package in (
        "jax",
        "jaxlib",
        "flax",
        "optax",
        "orbax-checkpoint",
        "numpy",
        "tensorflow-datasets",
        "pytest",
        "ruff",
    ):
        assert package in lock, package
    assert lock["jax"] == lock["jaxlib"]
    for accelerator, package in (("tpu", "libtpu"), ("cuda12", "jax-cuda12-plugin")):
        with open(os.path.join(REPO, f"requirements/{accelerator}.txt")) as handle:
            header = handle.readline()
        assert f"jax[{accelerator}]=={lock['jax']} adds" in header
        pins = _pins(f"requirements/{accelerator}.txt")
        assert package in pins and not set(pins) & {"jax", "jaxlib"}
    assert _pins("requirements/cuda12.txt")["jax-cuda12-plugin"] == lock["jax"]


def test_this_environment_runs_the_locked_versions():
    """launch/env.sh installs with the lock as constraints: every locked package installed here
    has the locked version (the suite runs in that environment)."""
    if not os.path.exists(
        os.path.join(os.path.dirname(sys.executable), "..", ".lenggen-installed")
    ):
        pytest.skip("not the environment launch/env.sh builds")
    wrong = {}
    for name, version in _pins("requirements/lock.txt").items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if installed != version:
            wrong[name] = (installed, version)
    assert not wrong, f"installed vs locked: {wrong}; rerun launch/env.sh or launch/lock.sh"


def _env_functions(script: str, **env: str) -> subprocess.CompletedProcess:
    """Bash with launch/env.sh's functions loaded (LENGGEN_ENV_FUNCTIONS_ONLY), then `script`."""
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run(
        ["bash", "-c", f"LENGGEN_ENV_FUNCTIONS_ONLY=1 source launch/env.sh; {script}"],
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "accelerator, expected",
    [
        ("", ["-c", f"{REPO}/requirements/lock.txt"]),
        ("cpu", ["-c", f"{REPO}/requirements/lock.txt"]),
        ("tpu", ["-c", f"{REPO}/requirements/lock.txt", "-r", f"{REPO}/requirements/tpu.txt"]),
        (
            "cuda12",
            ["-c", f"{REPO}/requirements/lock.txt", "-r", f"{REPO}/requirements/cuda12.txt"],
        ),
    ],
)
def test_env_installs_the_lock_and_the_accelerator_pins(accelerator, expected):
    result = _env_functions("_lenggen_requirements", LENGGEN_ACCELERATOR=accelerator)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == expected


def test_env_refuses_an_unknown_accelerator():
    result = _env_functions("_lenggen_requirements", LENGGEN_ACCELERATOR="rocm")
    assert result.returncode != 0
    assert result.stderr == "LENGGEN_ACCELERATOR=rocm: expected cpu, tpu or cuda12.\n"


def test_env_builds_one_environment_at_a_time(tmp_path):
    """Two setups started together (jobs of one array): the second waits on the lock until the
    first has installed. The install is a stand-in that records when it ran."""
    log = tmp_path / "installs.log"
    script = (
        f'_lenggen_install() {{ echo "start $(date +%s.%N)" >> {log}; sleep 1; '
        f'echo "end $(date +%s.%N)" >> {log}; }}; _lenggen_setup'
    )
    venv = str(tmp_path / "venv")
    processes = [
        subprocess.Popen(
            ["bash", "-c", f"LENGGEN_ENV_FUNCTIONS_ONLY=1 source launch/env.sh; {script}"],
            cwd=REPO,
            env={"PATH": os.environ["PATH"], "LENGGEN_VENV": venv},
        )
        for _ in range(2)
    ]
    started = time.monotonic()
    assert [p.wait(timeout=30) for p in processes] == [0, 0]
    events = [line.split() for line in log.read_text().splitlines()]
    assert [kind for kind, _ in events] == ["start", "end", "start", "end"]  # never interleaved
    assert float(events[2][1]) >= float(events[1][1])
    assert time.monotonic() - started >= 2.0
    assert os.path.exists(venv + ".lock")


# ---------------------------------------------------------------- SLURM


@pytest.mark.parametrize("script", ["launch/slurm_gpu.sbatch", "launch/slurm_sweep.sbatch"])
def test_slurm_scripts_ask_for_sigterm_before_the_limit_and_may_be_requeued(script):
    with open(os.path.join(REPO, script)) as handle:
        directives = [line.split()[1] for line in handle if line.startswith("#SBATCH")]
    assert "--signal=TERM@120" in directives  # to the job steps: lenggen.main checkpoints
    assert "--requeue" in directives and "--open-mode=append" in directives


def test_slurm_runs_one_task_per_node_with_the_job_coordinator_and_requeues_on_75():
    result = _dry_run(
        "launch/slurm_gpu.sbatch",
        "--dry-run",
        "configs/base.py:task=copy,pe=t5",
        "runs/copy/t5/256788",
        "--config.train.batch_size=64",
        SLURM_NTASKS="4",
        SLURM_JOB_ID="777",
        LENGGEN_COORDINATOR_HOST="gpu01",
    )
    assert result.returncode == 0, result.stderr
    commands = _commands(result.stdout)
    assert commands[0] == ["LENGGEN_ACCELERATOR=cuda12", "source", "launch/env.sh"]
    words = commands[1]
    assert words[:5] == ["srun", "--ntasks=4", "--ntasks-per-node=1", "bash", "-c"]
    # Each task expands its own $SLURM_PROCID: the inner command keeps it literal.
    assert shlex.split(words[5]) == [
        "exec",
        "python",
        "-m",
        "lenggen.main",
        "--config=configs/base.py:task=copy,pe=t5",
        "--workdir=runs/copy/t5/256788",
        "--config.train.batch_size=64",
        "--coordinator_address=gpu01:12777",
        "--num_processes=4",
        "--process_id=$SLURM_PROCID",
    ]
    assert commands[2:] == [["scontrol", "requeue", "777"]]
    assert "if it exited 75" in result.stdout


def test_slurm_without_a_job_needs_sbatch():
    result = _dry_run("launch/slurm_gpu.sbatch", "configs/base.py", "runs/x")
    assert result.returncode == 2 and "submit with sbatch" in result.stderr
    result = _dry_run("launch/slurm_sweep.sbatch", "--dry-run", "--grid=g.py")
    assert result.returncode == 2
    assert "Not a SLURM array task (no SLURM_ARRAY_TASK_ID)" in result.stderr


def test_slurm_sweep_from_the_printed_array_to_the_run_of_one_task(tmp_path):
    """The chain a user runs: the sweep prints `sbatch --array=...`; an array task's script runs
    the sweep with its --task_index; that becomes lenggen.main of that run."""
    sweep = subprocess.run(
        [
            sys.executable,
            "-m",
            "lenggen.sweep",
            "--grid=configs/grids/cpu_mini.py",
            f"--runs_dir={tmp_path}",
            "--only=copy_repeat/*/256788",
            "--mode=slurm",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sweep.returncode == 0, sweep.stderr
    (sbatch,) = _commands(sweep.stdout)
    assert sbatch[:3] == ["sbatch", "--array=0-4", "launch/slurm_sweep.sbatch"]
    result = _dry_run(*sbatch[2:], "--dry-run", SLURM_ARRAY_TASK_ID="3", SLURM_ARRAY_JOB_ID="41")
    assert result.returncode == 0, result.stderr
    environment, run, requeue = _commands(result.stdout)
    assert environment == ["LENGGEN_ACCELERATOR=cuda12", "source", "launch/env.sh"]
    assert run == [
        "srun",
        "--ntasks=1",
        "python",
        "-m",
        "lenggen.sweep",
        *sbatch[3:],
        "--task_index=3",
    ]
    assert requeue == ["scontrol", "requeue", "41_3"]
    task = subprocess.run(
        [sys.executable, *run[3:], "--mode=print"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert task.returncode == 0, task.stderr
    words = shlex.split(task.stdout)
    assert words[:4] == [
        "python",
        "-m",
        "lenggen.main",
        "--config=configs/base.py:task=copy_repeat,pe=rotary,seed=256788",
    ]
    assert words[4] == f"--workdir={tmp_path}/copy_repeat/rotary/256788"
