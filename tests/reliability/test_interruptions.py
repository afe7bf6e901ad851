"""A run interrupted by SIGTERM (preemption) or SIGKILL (at random points, during asynchronous
saves too) and restarted with the same command ends exactly as the uninterrupted run: the same
parameters, Adam moments and step counter bit for bit, the same training curve, the same results.

Each interruption is a real `python -m lenggen.main` process, signalled once it has logged a step.
"""

import json
import os
import random
import signal
import time

from lenggen.train import preemption
from tests.reliability import runs

_UNFINISHED = ".orbax-checkpoint-tmp"


def _same_ending(workdir: str, reference) -> None:
    expected_workdir, expected_payload = reference
    runs.assert_same_state(workdir, expected_workdir)
    assert runs.training_curve(workdir) == runs.training_curve(expected_workdir)
    with open(os.path.join(workdir, "results.json")) as handle:
        assert runs.scores(json.load(handle)) == json.loads(json.dumps(runs.scores(
            expected_payload)))


def test_sigterm_saves_the_current_step_and_the_same_command_resumes(tmp_path, data_dir,
                                                                     reference):
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
        tmp_path, data_dir, reference):
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
                assert (f"Removed checkpoints/{entry}: a save that a crash interrupted (never "
                        "restored).") in run.lines, run.stdout
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
        unfinished = [e for e in os.listdir(os.path.join(workdir, "checkpoints"))
                      if _UNFINISHED in e]
        if kill is None and kills[:1] != [None]:
            assert unfinished  # the kill during a save left it unfinished, never a step
        start = complete[-1]

    final = runs.Main(workdir, data_dir)
    assert final.finish() == 0, final.stderr()[-3000:]
    assert f"Resumed from step {start} in {workdir}." in final.lines
    assert all(f"Removed checkpoints/{entry}: a save that a crash interrupted (never "
               "restored)." in final.lines for entry in unfinished)
    assert not any(_UNFINISHED in e for e in os.listdir(os.path.join(workdir, "checkpoints")))
    _same_ending(workdir, reference)
