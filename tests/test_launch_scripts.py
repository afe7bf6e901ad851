"""The cluster launch scripts: valid bash, and `--dry-run` prints exactly the commands they would
run (parsed back with shlex), executing nothing (no gcloud, srun or python is called)."""

import os
import shlex
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("launch/multiprocess_local.sh", "launch/tpu_vm.sh", "launch/slurm_gpu.sbatch")


def _dry_run(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    # A PATH without gcloud/srun/python: a dry run that tried to run one would fail loudly.
    clean = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run(["bash", os.path.join(REPO, script), *args], cwd=REPO, env=clean,
                          capture_output=True, text=True, timeout=30)


def _commands(stdout: str) -> list[list[str]]:
    """The printed commands (comment lines dropped), split as a shell would."""
    return [shlex.split(line) for line in stdout.splitlines() if not line.startswith("#")]


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_valid_bash_and_executable(script):
    path = os.path.join(REPO, script)
    assert subprocess.run(["bash", "-n", path], capture_output=True).returncode == 0
    assert os.access(path, os.X_OK)


def test_multiprocess_local_prints_one_command_per_process_with_distinct_ids():
    result = _dry_run("launch/multiprocess_local.sh", "--dry-run", "3",
                      "configs/base.py:task=copy,pe=t5,smoke=true", "/tmp/mp run",
                      "--config.mesh.shape=(-1, 1)", LENGGEN_COORDINATOR_PORT="23456")
    assert result.returncode == 0, result.stderr
    commands = _commands(result.stdout)
    assert len(commands) == 3
    for process_id, words in enumerate(commands):
        assert words[:4] == ["XLA_FLAGS=--xla_force_host_platform_device_count=2", "python",
                             "-m", "lenggen.main"]
        assert words[4:] == [
            "--config=configs/base.py:task=copy,pe=t5,smoke=true",
            "--workdir=/tmp/mp run",
            "--config.mesh.shape=(-1, 1)",
            "--coordinator_address=127.0.0.1:23456",
            "--num_processes=3",
            f"--process_id={process_id}",
        ]


def test_multiprocess_local_defaults_keep_xla_flags_and_reject_a_bad_count():
    result = _dry_run("launch/multiprocess_local.sh", "2", "--dry-run",
                      XLA_FLAGS="--xla_cpu_enable_fast_math=false")
    assert result.returncode == 0, result.stderr
    commands = _commands(result.stdout)
    assert [words[0] for words in commands] == [
        "XLA_FLAGS=--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=2"
    ] * 2
    assert commands[1][4:6] == ["--config=configs/quickstart.py",
                                "--workdir=runs/quickstart-multiprocess"]
    assert commands[1][-1] == "--process_id=1"
    bad = _dry_run("launch/multiprocess_local.sh", "--dry-run", "two")
    assert bad.returncode == 2 and "N: number of processes, got 'two'" in bad.stderr


def test_tpu_vm_creates_or_reuses_the_vm_and_runs_on_all_workers():
    result = _dry_run("launch/tpu_vm.sh", "--dry-run", "--name=lg", "--zone=europe-west4-a",
                      "--accelerator-type=v5litepod-16", "--spot", "--delete",
                      "configs/base.py:task=scan,pe=nope", "runs/scan/nope/256788",
                      "--config.train.num_steps=10")
    assert result.returncode == 0, result.stderr
    commands = _commands(result.stdout)
    where = ["--zone=europe-west4-a"]
    tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
    assert commands[0] == tpu + ["describe", "lg"] + where
    assert commands[1] == tpu + ["create", "lg"] + where + [
        "--accelerator-type=v5litepod-16", "--version=tpu-ubuntu2204-base", "--spot"]
    assert commands[3] == tpu + ["scp", "/tmp/lenggen-src.tgz", "lg:lenggen-src.tgz"] + where + [
        "--worker=all"]
    # Setup, then training, on every worker.
    setup, train = commands[4], commands[5]
    assert setup[:6] + setup[6:8] == tpu + ["ssh", "lg"] + where + ["--worker=all"]
    assert "source launch/env.sh" in setup[-1] and "jax[tpu]" in setup[-1]
    assert train[:8] == tpu + ["ssh", "lg"] + where + ["--worker=all"]
    assert train[8] == (
        "--command=cd ~/lenggen && source .venv/bin/activate && python -m lenggen.main "
        "--config=configs/base.py:task=scan,pe=nope --workdir=runs/scan/nope/256788 "
        "--config.train.num_steps=10"
    )
    # Results come back from worker 0 only, without checkpoints; then the VM is deleted.
    assert "--worker=0" in commands[6] and "--exclude=checkpoints" in commands[6][-1]
    assert commands[7][:6] == tpu + ["scp", "lg:lenggen-results.tgz"]
    assert commands[-1] == tpu + ["delete", "lg"] + where + ["--quiet"]


def test_tpu_vm_refuses_an_absolute_workdir():
    result = _dry_run("launch/tpu_vm.sh", "--dry-run", "configs/base.py", "/abs/dir")
    assert result.returncode == 2
    assert "WORKDIR must be relative" in result.stderr and "'/abs/dir'" in result.stderr


def test_slurm_runs_one_task_per_node_with_the_job_coordinator():
    result = _dry_run("launch/slurm_gpu.sbatch", "--dry-run", "configs/base.py:task=copy,pe=t5",
                      "runs/copy/t5/256788", "--config.train.batch_size=64",
                      SLURM_NTASKS="4", SLURM_JOB_ID="777", LENGGEN_COORDINATOR_HOST="gpu01")
    assert result.returncode == 0, result.stderr
    srun = [words for words in _commands(result.stdout) if words[0] == "srun"]
    assert len(srun) == 1
    words = srun[0]
    assert words[:6] == ["srun", "--ntasks=4", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                         "bash", "-c"]
    # Each task expands its own $SLURM_PROCID: the inner command keeps it literal.
    assert shlex.split(words[6]) == [
        "exec", "python", "-m", "lenggen.main", "--config=configs/base.py:task=copy,pe=t5",
        "--workdir=runs/copy/t5/256788", "--config.train.batch_size=64",
        "--coordinator_address=gpu01:12777", "--num_processes=4", "--process_id=$SLURM_PROCID",
    ]


def test_slurm_without_a_job_needs_sbatch():
    result = _dry_run("launch/slurm_gpu.sbatch", "configs/base.py", "runs/x")
    assert result.returncode == 2 and "submit with sbatch" in result.stderr
