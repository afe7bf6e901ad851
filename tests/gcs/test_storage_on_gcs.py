"""lenggen.rundir's files and lock against a real GCS API server (tests/gcs/emulator.py)."""

import json
import socket
import subprocess
import sys
import time

import pytest

from lenggen import rundir
from lenggen.rundir import lock as lock_lib
from lenggen.rundir import storage


def test_whole_file_writes_round_trip_and_replace(gcs_dir):
    path = f"{gcs_dir}/results.json"
    storage.write_json(path, {"b": [1, 2], "a": 0.5})
    assert storage.read_text(path) == '{\n  "a": 0.5,\n  "b": [\n    1,\n    2\n  ]\n}\n'
    storage.write_json(path, {"a": 1})
    assert storage.read_json(path) == {"a": 1}


def test_a_payload_that_does_not_serialise_leaves_the_old_object(gcs_dir):
    path = f"{gcs_dir}/config.json"
    storage.write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        storage.write_json(path, {"a": object()})
    assert storage.read_json(path) == {"a": 1}


def test_append_line_keeps_every_line_in_order(gcs_dir):
    run_dir = rundir.RunDir(gcs_dir)
    for step in (1, 2, 3):
        run_dir.append_event({"event": "train", "step": step})
    run_dir.append_event({"event": "resumed", "step": 2})
    run_dir.trim_metrics(2)  # drops train step 3, keeps the lifecycle event
    lines = storage.read_text(run_dir.file(rundir.METRICS_FILE)).splitlines()
    assert [json.loads(line) for line in lines] == [
        {"event": "train", "step": 1},
        {"event": "train", "step": 2},
        {"event": "resumed", "step": 2},
    ]


def test_move_aside_moves_every_object(gcs_dir):
    run_dir = rundir.RunDir(gcs_dir)
    storage.write_json(f"{gcs_dir}/config.json", {"seed": 1})
    storage.write_bytes(f"{gcs_dir}/checkpoints/4/default/a", b"x")
    backup = run_dir.move_aside()
    assert (backup / "checkpoints/4/default/a").read_bytes() == b"x"
    assert storage.read_json(backup / "config.json") == {"seed": 1}
    assert not run_dir.has("config.json") and not run_dir.has("checkpoints")


def test_the_lock_refuses_a_second_holder_and_names_the_first(gcs_dir):
    first = rundir.RunDir(gcs_dir).lock()
    first.acquire()
    try:
        with pytest.raises(rundir.WorkdirLockedError) as refused:
            rundir.RunDir(gcs_dir).lock().acquire()
        message = str(refused.value)
        assert f"pid {__import__('os').getpid()} on {socket.gethostname()}" in message
        assert f"{gcs_dir}/lock.json" in message and "\n" not in message
    finally:
        first.release()
    assert not storage.exists(f"{gcs_dir}/lock.json")
    with rundir.RunDir(gcs_dir).lock():  # free again
        pass


def test_a_lock_left_by_a_killed_process_is_recovered(gcs_dir, gcs):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from lenggen.rundir import lock; "
            f"lock.WorkdirLock({gcs_dir!r}).acquire(); print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(rundir.WorkdirLockedError, match=f"pid {holder.pid} "):
            rundir.RunDir(gcs_dir).lock().acquire()
    finally:
        holder.kill()  # SIGKILL: the lock object stays behind
        holder.wait()
    assert storage.exists(f"{gcs_dir}/lock.json")
    recovering = rundir.RunDir(gcs_dir).lock()
    recovering.acquire()
    try:
        assert recovering.recovered["pid"] == holder.pid
    finally:
        recovering.release()


def test_a_lock_not_refreshed_in_time_is_stale_even_from_another_host(gcs_dir):
    other_host = json.dumps({"host": "another-host", "pid": 1, "started": "then"}).encode()
    storage.write_bytes(f"{gcs_dir}/lock.json", other_host)
    with pytest.raises(rundir.WorkdirLockedError, match="pid 1 on another-host"):
        lock_lib.WorkdirLock(gcs_dir, stale_after_s=30.0).acquire()
    time.sleep(1.5)
    taking = lock_lib.WorkdirLock(gcs_dir, stale_after_s=1.0)
    taking.acquire()
    try:
        assert taking.recovered == {"host": "another-host", "pid": 1, "started": "then"}
    finally:
        taking.release()


def test_the_heartbeat_refreshes_the_lock_and_keeps_it_alive(gcs_dir):
    held = lock_lib.WorkdirLock(gcs_dir, heartbeat_s=0.3, stale_after_s=1.0)
    held.acquire()
    try:
        first = held._generation
        time.sleep(2.0)  # several beats, longer than stale_after_s
        assert held._generation != first and not held.lost.is_set()
        with pytest.raises(rundir.WorkdirLockedError):
            lock_lib.WorkdirLock(gcs_dir, stale_after_s=1.0).acquire()
    finally:
        held.release()


def test_of_two_runs_recovering_one_stale_lock_exactly_one_wins(gcs_dir):
    """Both see the same stale generation; the generation precondition lets one through."""
    storage.write_bytes(f"{gcs_dir}/lock.json", b'{"host": "gone", "pid": 1}')
    first, second = (lock_lib.WorkdirLock(gcs_dir, stale_after_s=0.0) for _ in range(2))
    _, generation, _ = first._read_gcs()
    first._generation = first._upload(b'{"host": "a"}', generation)
    with pytest.raises(FileExistsError):
        second._upload(b'{"host": "b"}', generation)
    assert storage.read_json(f"{gcs_dir}/lock.json") == {"host": "a"}


def test_a_lock_taken_over_is_reported_lost_by_the_heartbeat(gcs_dir):
    held = lock_lib.WorkdirLock(gcs_dir, heartbeat_s=0.2, stale_after_s=60.0)
    held.acquire()
    _, generation, _ = held._read_gcs()
    held._upload(b'{"host": "usurper"}', generation)  # as a run that judged it stale would
    assert held.lost.wait(5.0)
    held.release()  # does not delete the usurper's lock
    assert storage.read_json(f"{gcs_dir}/lock.json") == {"host": "usurper"}
