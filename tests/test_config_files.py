"""Shipped configs: found by path or name from any directory, and a wheel built from the
repository (not an editable install) runs the quickstart from outside the checkout."""

import json
import os
import subprocess
import sys
import sysconfig

import pytest

from lenggen import config_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_existing_paths_win_over_shipped_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "quickstart.py").write_text("# an edited copy")
    assert config_files.resolve("configs/quickstart.py:pe=t5") == "configs/quickstart.py:pe=t5"


def test_missing_paths_and_names_resolve_to_the_shipped_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = config_files.shipped_dir()
    assert os.path.isfile(os.path.join(shipped, "base.py"))
    assert config_files.resolve("configs/base.py:task=copy,pe=t5") == (
        os.path.join(shipped, "base.py") + ":task=copy,pe=t5"
    )
    assert config_files.resolve("quickstart") == os.path.join(shipped, "quickstart.py")
    assert config_files.resolve("grids/paper.py:tasks=maths") == (
        os.path.join(shipped, "grids", "paper.py") + ":tasks=maths"
    )
    # Unknown names are left as typed, for the loader's own "not found" error.
    assert config_files.resolve("configs/nope.py") == "configs/nope.py"


def test_resolve_argv_rewrites_only_the_named_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = os.path.join(config_files.shipped_dir(), "quickstart.py")
    argv = [
        "prog",
        "--config=quickstart:pe=t5",
        "--workdir=quickstart",
        "--config",
        "configs/quickstart.py",
        "--config.train.num_steps=3",
    ]
    assert config_files.resolve_argv(argv, "config") == [
        "prog",
        f"--config={shipped}:pe=t5",
        "--workdir=quickstart",
        "--config",
        shipped,
        "--config.train.num_steps=3",
    ]


def test_wheel_runs_the_quickstart_outside_the_checkout(tmp_path):
    """~1 min: builds the wheel, installs it (without deps) into a fresh venv that borrows the
    test environment's dependencies, and trains the quickstart config for 2 steps elsewhere."""
    dist, venv, elsewhere = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", REPO, "-w", str(dist), "--no-deps", "--quiet"],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    wheels = list(dist.glob("lenggen-*.whl"))
    assert len(wheels) == 1
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheels[0]),
        ],
        check=True,
        capture_output=True,
    )
    # The dependencies from this environment, behind the venv's own site-packages (a plain
    # path: this environment's editable lenggen finder is not loaded).
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with open(os.path.join(site, "lenggen_test_deps.pth"), "w") as handle:
        handle.write(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run(
        [python, "-c", "import lenggen; print(lenggen.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip().startswith(site), where.stdout
    done = subprocess.run(
        [
            python,
            "-m",
            "lenggen.main",
            "--config=configs/quickstart.py",
            "--workdir=run",
            "--config.data.dir=data",
            "--config.train.num_steps=2",
            "--config.train.eval_every=2",
            "--config.train.log_every=1",
            "--config.task.options.num_train=256",
            "--config.task.options.num_validation=64",
            "--config.task.options.num_test_per_length=8",
            "--config.eval.metric=teacher_forced",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step 2/2" in done.stdout
    with open(elsewhere / "run" / "results.json") as handle:
        saved = json.load(handle)
    assert saved["step"] == 2 and saved["task"] == "copy"
    assert sorted(saved["splits"]["test"]["by_length"], key=int) == [str(n) for n in range(9, 15)]
    # An installed wheel is not a checkout: no commit to report.
    assert saved["provenance"]["lenggen"]["git_commit"] is None


@pytest.mark.parametrize("module", ["lenggen.main"])
def test_unknown_config_is_refused_naming_what_was_typed(tmp_path, module):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-m", module, "--config=configs/nothere.py", "--workdir=w"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "configs/nothere.py" in done.stderr
