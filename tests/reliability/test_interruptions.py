"""A run interrupted by SIGTERM (preemption) or SIGKILL (at random points, during asynchronous
saves too) and restarted with the same command ends exactly as the uninterrupted run: the same
parameters, Adam moments and step counter bit for bit, the same training curve, the same results.

Each interruption is a real `python -m lenggen.main` process, signalled once it has logged a step.
"""

import json
import os
import random
import shutil
import signal
import time

import pytest

from lenggen.train import loop, preemption
from tests.reliability import runs

_UNFINISHED = ".orbax-checkpoint-tmp"


def _same_ending(workdir: str, reference) -> None:
    expected_workdir, expected_payload = reference
    runs.assert_same_state(workdir, expected_workdir)
    assert runs.training_curve(workdir) == runs.training_curve(expected_workdir)
    with open(os.path.join(workdir, "results.json")) as handle:
        assert runs.scores(json.load(handle)) == json.loads(
            json.dumps(runs.scores(expected_payload))
        )


def test_sigterm_saves_the_current_step_and_the_same_command_resumes(tmp_path, data_dir, reference):
    workdir = str(tmp_path / "run")
    run = runs.Main(workdir, data_dir)
    run.wait_for_line("step 5/")
    run.process.send_signal(signal.SIGTERM)
    status = run.finish()
    assert status == preemption.EXIT_CODE, run.stderr()[-3000:]

    [notice] = [line for line in run.lines if line.startswith("Preempted")]
    step = int(notice.split(" at step ")[1].split("/")[0])
    assert 5 <= step < runs.STEPS, notice  # stopped mid-training, not at the end
    assert f"checkpoints/{step}. Run the same command to resume." in notice
    assert "lenggen: Preempted (SIGTERM)" in run.stderr()
    # The step it was on is saved whatever checkpoint_every (4) says, and is complete.
    assert runs.complete_steps(workdir)[-1] == step
    assert [e["step"] for e in runs.events(workdir, "preempted")] == [step]
    assert not os.path.exists(os.path.join(workdir, "results.json"))

    again = runs.Main(workdir, data_dir)
    assert again.finish() == 0, again.stderr()[-3000:]
    assert f"Resumed from step {step} in {workdir}." in again.lines
    first = next(line for line in again.lines if line.startswith("step "))
    assert first.startswith(f"step {step + 1}/{runs.STEPS} ")  # no step lost, none repeated
    _same_ending(workdir, reference)


def _kill_during_a_save(run: runs.Main, after: int) -> bool:
    """SIGKILL while an asynchronous checkpoint save is being written (its temporary directory
    exists, not yet renamed), once a save newer than step `after` has completed. Returns whether
    the kill left that save unfinished (the save wins only if it completes in the instant
    between the look and the kill)."""
    checkpoints = os.path.join(run.workdir, "checkpoints")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        entries = os.listdir(checkpoints) if os.path.isdir(checkpoints) else []
        newer = any(e.isdigit() and int(e) > after for e in entries)
        if newer and any(_UNFINISHED in e for e in entries):
            run.process.kill()
            run.finish()
            return any(_UNFINISHED in entry for entry in os.listdir(checkpoints))
        time.sleep(0.002)
    raise AssertionError(f"No save seen in progress in {checkpoints}:\n{run.stdout}")


def test_sigkill_at_random_points_resumes_from_the_newest_complete_checkpoint(
    tmp_path, data_dir, reference
):
    workdir = str(tmp_path / "run")
    rng = random.Random(1125)
    # The first kill lands while a save is being written; the others a seeded random number
    # of steps after the resumed one, at a random moment within the step.
    kills = [None] + [(rng.randint(1, 14), rng.uniform(0.0, 0.3)) for _ in range(2)]
    start, attempts, unfinished = 0, 0, []
    while kills:
        kill = kills.pop(0)
        run = runs.Main(workdir, data_dir)
        run.wait_for_line("step ")
        if start:
            # Resumed from the newest step whose save had finished before the kill, after
            # deleting what the kill left unfinished.
            assert f"Resumed from step {start} in {workdir}." in run.lines, run.stdout
            for entry in unfinished:
                assert (
                    f"Removed checkpoints/{entry}: a save that a crash interrupted (never "
                    "restored)."
                ) in run.lines, run.stdout
        if kill is None:
            attempts += 1
            if not _kill_during_a_save(run, after=start) and attempts < 3:
                kills.insert(0, None)  # the save won the race: kill the next one
        else:
            steps_later, delay = kill
            run.wait_for_line(f"step {min(start + steps_later, runs.STEPS - 2)}/")
            time.sleep(delay)
            run.process.kill()
        assert run.finish() == -signal.SIGKILL
        complete = runs.complete_steps(workdir)
        assert complete and complete[-1] < runs.STEPS, run.stdout  # killed mid-training
        unfinished = [
            e for e in os.listdir(os.path.join(workdir, "checkpoints")) if _UNFINISHED in e
        ]
        if kill is None and kills[:1] != [None]:
            assert unfinished  # the kill during a save left it unfinished, never a step
        start = complete[-1]

    final = runs.Main(workdir, data_dir)
    assert final.finish() == 0, final.stderr()[-3000:]
    assert f"Resumed from step {start} in {workdir}." in final.lines
    assert all(
        f"Removed checkpoints/{entry}: a save that a crash interrupted (never "
        "restored)." in final.lines
        for entry in unfinished
    )
    assert not any(_UNFINISHED in e for e in os.listdir(os.path.join(workdir, "checkpoints")))
    _same_ending(workdir, reference)


def _wait_for(predicate, what: str, run: runs.Main, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if run.process.poll() is not None:
            break
        time.sleep(0.005)
    raise AssertionError(f"Never saw {what}:\n{run.stdout}\n{run.stderr()[-3000:]}")


def _started(workdir: str) -> bool:
    path = os.path.join(workdir, "metrics.jsonl")
    return os.path.exists(path) and '"event": "started"' in open(path).read()


def _saving(workdir: str) -> bool:
    path = os.path.join(workdir, "checkpoints")
    return os.path.isdir(path) and any(_UNFINISHED in e for e in os.listdir(path))


def _one_line(run: runs.Main) -> str:
    stderr = run.stderr()
    assert "Traceback" not in stderr, stderr[-3000:]
    [line] = [line for line in stderr.splitlines() if line.startswith("lenggen: ")]
    return line


def test_signals_in_every_phase_stop_cleanly_with_the_documented_status(
    tmp_path, data_dir, reference
):
    """SIGTERM in setup, twice while the first step compiles, and during a save; SIGINT during
    training. Each: one line, status 75 (SIGTERM) or 130 (SIGINT), and the step it was on saved
    wherever there was a state to save. (The final evaluation: the next test.)"""
    started = {}
    for case in ("setup", "compile", "saving", "sigint"):
        (tmp_path / case).mkdir()
        # A fresh dataset directory: setup then includes building the dataset.
        data = str(tmp_path / "fresh_data") if case == "setup" else data_dir
        started[case] = runs.Main(str(tmp_path / case / "run"), data)
    run = started["setup"]
    run.wait_for_line("Setting up copy, nope, seed 3")
    run.process.send_signal(signal.SIGTERM)
    run = started["compile"]
    _wait_for(lambda: _started(run.workdir), "the start of training", run)
    run.process.send_signal(signal.SIGTERM)
    run.process.send_signal(signal.SIGTERM)  # repeated: changes nothing
    run = started["saving"]
    _wait_for(lambda: _saving(run.workdir), "a save in progress", run)
    run.process.send_signal(signal.SIGTERM)
    run = started["sigint"]
    run.wait_for_line("step 5/")
    run.process.send_signal(signal.SIGINT)
    statuses = {case: run.finish() for case, run in started.items()}
    assert statuses == dict(setup=75, compile=75, saving=75, sigint=130), {
        case: run.stderr()[-2000:] for case, run in started.items()
    }

    run = started["setup"]
    assert _one_line(run) == (
        "lenggen: Preempted (SIGTERM) before training started: nothing "
        "was saved. Run the same command to start again."
    )
    assert not os.path.exists(run.workdir)  # nothing written before training
    # A build cut short removes its temporary directory (tfds, on the exception).
    assert not list((tmp_path / "fresh_data").rglob("incomplete.*"))

    for case in ("compile", "saving", "sigint"):
        run = started[case]
        line = _one_line(run)
        kind = "Interrupted (SIGINT)" if case == "sigint" else "Preempted (SIGTERM)"
        step = int(line.split(" at step ")[1].split("/")[0])
        assert line == (
            f"lenggen: {kind} at step {step}/{runs.STEPS}: saved {run.workdir}/"
            f"checkpoints/{step}. Run the same command to resume."
        ), line
        assert runs.complete_steps(run.workdir)[-1] == step
        assert step == 1 if case == "compile" else step >= 4, (case, step)

    # SIGINT lost nothing: the same command resumes at the step it saved and ends as the
    # uninterrupted run.
    run = started["sigint"]
    again = runs.Main(run.workdir, data_dir)
    assert again.finish() == 0, again.stderr()[-3000:]
    _same_ending(run.workdir, reference)


def test_sigterm_during_the_final_evaluation_stops_before_results_are_written(
    tmp_path, data_dir, reference, monkeypatch
):
    """In-process, with lenggen.main's handlers: the signal arrives (twice) while the test split
    is scored, a moment too short to hit from outside."""
    run = str(tmp_path / "run")
    shutil.copytree(reference[0], run)
    before = {
        name: open(os.path.join(run, name), "rb").read()
        for name in ("results.json", "samples.jsonl", "accuracy_vs_length.png")
    }
    evaluate = loop.Experiment.evaluate

    def signalled(self, params, split, metric):
        if split == "test":
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(self, params, split, metric)

    monkeypatch.setattr(loop.Experiment, "evaluate", signalled)
    # Put back after the test: no handler installed, Python's own signal handlers.
    monkeypatch.setattr(preemption, "_installed", None)
    previous = {s: signal.getsignal(s) for s in preemption.SIGNALS}
    try:
        preemption.install()
        with pytest.raises(preemption.Interrupted) as stop:
            loop.run(runs.config_for(data_dir), run, mode="evaluate")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert preemption.exit_status(stop.value.signum) == 75
    assert str(stop.value) == (
        "Preempted (SIGTERM) during the final evaluation: results files "
        "are replaced atomically, so none is half-written. Run the same "
        "command to evaluate again."
    )
    for name, content in before.items():
        assert open(os.path.join(run, name), "rb").read() == content, name
