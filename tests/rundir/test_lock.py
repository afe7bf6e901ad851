"""The workdir lock on a local disk: a second holder is refused with one line naming the first;
a lock whose holder was killed (SIGKILL) is free at once; release removes the file."""

import json
import os
import socket
import subprocess
import sys

import pytest

from lenggen import rundir


def test_a_second_run_is_refused_with_one_line_naming_the_holder(tmp_path):
    with rundir.RunDir(tmp_path).lock():
        holder = json.loads((tmp_path / rundir.LOCK_FILE).read_text())
        assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())
        with pytest.raises(rundir.WorkdirLockedError) as refused:
            rundir.RunDir(tmp_path).lock().acquire()
    assert str(refused.value) == (
        f"Workdir {tmp_path} is in use by pid {os.getpid()} on {socket.gethostname()} "
        f"(since {holder['started']}) ({tmp_path}/{rundir.LOCK_FILE}); wait for that run to "
        "end, or stop it, then run this command again."
    )
    assert not (tmp_path / rundir.LOCK_FILE).exists()  # released


def test_another_process_is_refused_while_the_lock_is_held(tmp_path):
    with rundir.RunDir(tmp_path).lock():
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from lenggen import rundir; rundir.RunDir({str(tmp_path)!r}).lock().acquire()",
            ],
            capture_output=True,
            text=True,
        )
    assert other.returncode == 1
    assert f"WorkdirLockedError: Workdir {tmp_path} is in use by pid {os.getpid()}" in other.stderr


def test_the_lock_of_a_killed_run_is_recovered_at_once(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from lenggen import rundir; "
            f"rundir.RunDir({str(tmp_path)!r}).lock().acquire(); print('held', flush=True); "
            "time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(rundir.WorkdirLockedError, match=f"pid {holder.pid} "):
            rundir.RunDir(tmp_path).lock().acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = rundir.RunDir(tmp_path).lock()
    lock.acquire()
    try:
        assert lock.recovered["pid"] == holder.pid
        assert json.loads((tmp_path / rundir.LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        lock.release()


def test_move_aside_leaves_the_lock_in_place(tmp_path):
    run_dir = rundir.RunDir(tmp_path)
    with run_dir.lock():
        run_dir.write_json(rundir.CONFIG_FILE, {"seed": 1})
        backup = run_dir.move_aside()
        assert (tmp_path / rundir.LOCK_FILE).exists()
        assert sorted(os.listdir(backup)) == [rundir.CONFIG_FILE]


def test_lenggen_main_on_a_locked_workdir_exits_2_naming_the_holder(tmp_path):
    """Two commands on one workdir: the second stops with one line, before it writes there."""
    workdir = tmp_path / "run"
    with rundir.RunDir(workdir).lock():
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "lenggen.main",
                "--config=tests/reliability/tiny_config.py:steps=2",
                f"--workdir={workdir}",
                f"--config.data.dir={tmp_path / 'data'}",
            ],
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert sorted(os.listdir(workdir)) == [rundir.LOCK_FILE]  # no config.json written
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("lenggen: ")]
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith(
        f"lenggen: Workdir {workdir} is in use by pid {os.getpid()} on {socket.gethostname()}"
    )
