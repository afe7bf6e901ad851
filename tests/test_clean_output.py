"""A normal run's output holds lenggen's own lines: no TFDS banner or warnings when a dataset is
prepared, no Orbax INFO lines from the analysis commands, and every command's --help lists its
own flags."""

import logging
import os
import re
import subprocess
import sys

from absl import logging as absl_logging

from lenggen import quiet_logs
from lenggen.data import dataset
from tests.data import fake_task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# module -> flags its --help must list
COMMANDS = {
    "lenggen.main": ("--config", "--workdir", "--mode", "--[no]overwrite"),
    "lenggen.report": ("--out",),
    "lenggen.tasks.describe": ("--tasks", "--examples", "--options"),
    "lenggen.analysis.theorems": ("--max_position", "--num_heads"),
    "lenggen.analysis.attention_maps": ("--workdir", "--output_dir", "--split", "--length"),
    "lenggen.analysis.attention_similarity": ("--reference", "--compare", "--output_dir"),
    "benchmarks.train_throughput": ("--sizes", "--pes", "--batches"),
    "benchmarks.cpu_flags": ("--sizes", "--variants", "--rounds"),
}


def test_preparing_a_dataset_prints_and_logs_nothing(tmp_path, capfd, caplog):
    absl_logging.set_verbosity(absl_logging.INFO)  # the filter, not the verbosity, must hide it
    try:
        with caplog.at_level(logging.DEBUG):
            prepared = dataset.prepare(fake_task.FakeCopy(), str(tmp_path))
    finally:
        absl_logging.set_verbosity(absl_logging.WARNING)
    assert prepared.max_sequence_length("train") > 0
    out, err = capfd.readouterr()
    assert "Downloading and preparing" not in out + err
    assert "downloaded and prepared" not in out + err
    assert out == ""
    assert [r for r in caplog.records if "tensorflow_datasets" in r.pathname] == []


def test_library_filter_keeps_errors_and_other_packages(caplog):
    # TFDS and Orbax log through absl's logger, as this test does (from a file under tests/).
    with caplog.at_level(logging.DEBUG), quiet_logs.below(logging.ERROR, "tests"):
        absl_logging.warning("dropped: from a file under tests/")
        absl_logging.error("kept: an error")
    with caplog.at_level(logging.DEBUG), quiet_logs.below(logging.ERROR, "orbax"):
        absl_logging.warning("kept: not from orbax")
    absl_logging.warning("kept: the filter is gone")
    assert [r.getMessage() for r in caplog.records] == [
        "kept: an error",
        "kept: not from orbax",
        "kept: the filter is gone",
    ]


def test_every_command_help_lists_its_own_flags():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    running = {
        module: subprocess.Popen(
            [sys.executable, "-m", module, "--help"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for module in COMMANDS
    }
    for module, process in running.items():
        out, _ = process.communicate(timeout=180)
        # absl's --help exits with status 1 after printing, argparse's with 0.
        assert process.returncode in (0, 1) and "Traceback" not in out, (module, out[-2000:])
        missing = [flag for flag in COMMANDS[module] if flag not in out]
        assert missing == [], (module, out[-2000:])


def test_shipped_results_name_no_absolute_paths():
    """docs/ and benchmarks/results/ are read on other machines: no /home, /root, /work, /tmp."""
    pattern = re.compile(r"/(home|root|work|tmp)/[A-Za-z]")
    found = []
    for top in ("docs", os.path.join("benchmarks", "results")):
        for directory, _, names in os.walk(os.path.join(REPO, top)):
            for name in names:
                if name.endswith((".md", ".json", ".jsonl", ".sh", ".ipynb", ".txt")):
                    path = os.path.join(directory, name)
                    with open(path, encoding="utf-8") as handle:
                        found += [
                            f"{os.path.relpath(path, REPO)}:{n}"
                            for n, line in enumerate(handle, 1)
                            if pattern.search(line)
                        ]
    assert found == []
