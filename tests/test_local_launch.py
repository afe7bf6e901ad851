"""launch/local.sh runs the fastest measured XLA CPU configuration (one device, oneDNN
matmuls) unless the user set XLA_FLAGS or LENGGEN_CPU_DEFAULTS=0; --dry-run prints the command."""

import os
import shlex
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONEDNN = (
    "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_onednn=true "
    "--xla_cpu_experimental_onednn_custom_call=true"
)


def _dry_run(*args, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "LENGGEN_CPU_DEFAULTS")}
    done = subprocess.run(
        ["bash", os.path.join(REPO, "launch", "local.sh"), "--dry-run", *args],
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return shlex.split(done.stdout.strip().splitlines()[-1])


def test_quickstart_defaults_to_one_device_with_onednn():
    assert _dry_run() == [
        f"XLA_FLAGS={ONEDNN}",
        "python",
        "-m",
        "lenggen.main",
        "--config=configs/quickstart.py",
        "--workdir=runs/quickstart",
    ]


def test_user_flags_and_the_opt_out_are_kept():
    words = _dry_run(
        "configs/base.py:task=copy",
        "w d",
        "--config.seed=1",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    assert words == [
        "XLA_FLAGS=--xla_force_host_platform_device_count=2",
        "python",
        "-m",
        "lenggen.main",
        "--config=configs/base.py:task=copy",
        "--workdir=w d",
        "--config.seed=1",
    ]
    assert _dry_run(LENGGEN_CPU_DEFAULTS="0")[0] == "XLA_FLAGS="
