"""What the fault tests share: the tiny experiment's config, a `python -m lenggen.main` process
to interrupt, and readers of what a run left in its workdir."""

import json
import os
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from tests.reliability import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_FILE = "tests/reliability/tiny_config.py"

# Long enough that a kill at a random point lands in training (checkpoints every 4 steps).
STEPS = 32


def config_for(data_dir: str, steps: int = STEPS, **train):
    config = tiny_config.get_config(f"steps={steps}")
    config.train.update(train)
    config.data.dir = data_dir
    return config


def final_state(workdir: str, step: int | None = None) -> dict:
    """The checkpointed train state (params, opt_state, step) as numpy, newest step by default."""
    manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    step = manager.latest_step() if step is None else step
    state = manager.restore(step, args=ocp.args.StandardRestore())
    manager.close()
    return jax.tree.map(np.asarray, state)


def assert_same_state(workdir: str, expected_workdir: str) -> None:
    """Bit-identical params, Adam moments and step counter in the newest checkpoints."""
    got, expected = final_state(workdir), final_state(expected_workdir)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    jax.tree.map(np.testing.assert_array_equal, got, expected)


def events(workdir: str, kind: str | None = None) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as handle:
        records = [json.loads(line) for line in handle]
    return [r for r in records if kind is None or r["event"] == kind]


def scores(payload: dict) -> dict:
    """A results payload without its provenance (times and command differ between runs)."""
    return {k: v for k, v in payload.items() if k != "provenance"}


def training_curve(workdir: str) -> list[tuple]:
    """Every train and validation event without its timing: equal for equal training."""
    return [
        tuple(sorted((k, v) for k, v in r.items() if k not in ("steps_per_second", "wall_time")))
        for r in events(workdir)
        if r["event"] in ("train", "validation")
    ]


def complete_steps(workdir: str, directory: str = "checkpoints") -> list[int]:
    """Steps whose save finished (Orbax renames `<step>.orbax-checkpoint-tmp` to `<step>`)."""
    path = os.path.join(workdir, directory)
    return sorted(int(e) for e in os.listdir(path) if e.isdigit()) if os.path.isdir(path) else []


class Main:
    """`python -m lenggen.main` on the tiny config, started in the background.

    Stdout is read line by line as the run prints it, so a test can act on progress (e.g.
    signal the process once it has logged a step). The environment is the test process's, so
    the run sees the same 4 fake devices and XLA flags as in-process runs (tests/conftest.py)
    and compiles the same programs: its results can be compared bit for bit.
    """

    def __init__(self, workdir: str, data_dir: str, *flags: str, steps: int = STEPS):
        self.workdir = workdir
        self.lines: list[str] = []
        self._stderr = open(os.path.join(os.path.dirname(workdir), "stderr.txt"), "w+")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lenggen.main",
                f"--config={CONFIG_FILE}:steps={steps}",
                f"--workdir={workdir}",
                f"--config.data.dir={data_dir}",
                *flags,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def stdout(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, prefix: str, timeout: float = 120.0) -> str:
        """The first stdout line starting with `prefix`, waiting for it to be printed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.startswith(prefix):
                    return line
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.01)
        raise AssertionError(
            f"No line starting with {prefix!r}; stdout:\n{self.stdout}\n"
            f"stderr:\n{self.stderr()[-3000:]}"
        )

    def finish(self, timeout: float = 300.0) -> int:
        """Waits for the process to end; returns its exit status."""
        status = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return status

    def stderr(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()
