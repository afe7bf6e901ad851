"""The report: aggregation over seeds, the paper's PE ranking, the plots — on hand-made results
with hand-worked answers, and on a small real sweep checked against numbers computed here,
independently, from its results files."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import image

from lenggen.report import ReportError, aggregate, build_report, collect, markdown

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _split(by_length: dict[int, tuple[float, int]]) -> dict:
    correct = sum(em * n for em, n in by_length.values())
    total = sum(n for _, n in by_length.values())
    return {
        "overall": correct / total,
        "by_length": {str(k): {"exact_match": em, "n": n} for k, (em, n) in by_length.items()},
    }


def _write(runs_dir, task, pe, seed, validation, test, train_max_length=3) -> str:
    workdir = os.path.join(runs_dir, task, pe, str(seed))
    os.makedirs(workdir, exist_ok=True)
    payload = {
        "train_max_length": train_max_length,
        "step": 10,
        "task": task,
        "pe": pe,
        "seed": seed,
        "metric": "exact",
        "splits": {"validation": _split(validation), "test": _split(test)},
    }
    with open(os.path.join(workdir, "results.json"), "w") as handle:
        json.dump(payload, handle)
    return workdir


# ---------------------------------------------------------------- hand-made results


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory):
    """Task copy (trained to length 3), PEs nope and t5, seeds 1-3. Test accuracies: nope
    0.5, 1.0, 0.0 (mean 0.5, sample std 0.5); t5 0.2, 0.4, 0.6 (mean 0.4, std 0.2)."""
    runs = tmp_path_factory.mktemp("hand_made")
    for seed, nope, t5 in ((1, 0.5, 0.2), (2, 1.0, 0.4), (3, 0.0, 0.6)):
        # Length 3 is in both splits for seed 1: validation 2/2 right, test 3/6 -> pooled 5/8.
        validation = {2: (1.0, 4), 3: (1.0, 2)}
        _write(
            runs,
            "copy",
            "nope",
            seed,
            validation,
            {3: (nope, 6), 4: (nope, 4)} if seed == 1 else {4: (nope, 10)},
        )
        _write(runs, "copy", "t5", seed, {2: (0.5, 4), 3: (0.75, 4)}, {4: (t5, 10)})
    # Old runs moved aside by --overwrite, hidden folders (the sweep's compile cache) and
    # checkpoints are not searched.
    for ignored in (
        os.path.join("copy", "nope", "1", "replaced-20260101-000000"),
        ".jax_cache",
        os.path.join("copy", "t5", "1", "checkpoints"),
    ):
        _write(os.path.join(runs, ignored), "x", "y", 0, {1: (1.0, 1)}, {2: (1.0, 1)})
    return runs


def test_overall_tables_are_mean_and_sample_std_over_seeds(hand_made):
    runs = collect(str(hand_made))
    assert len(runs) == 6
    ood = aggregate.overall_table(runs, "test")["copy"]
    assert ood["nope"] == pytest.approx({"mean": 0.5, "std": 0.5, "n": 3})
    assert ood["t5"] == pytest.approx({"mean": 0.4, "std": 0.2, "n": 3})
    # Validation overall: nope 6/6 every seed; t5 (2 + 3) / 8 = 0.625 every seed.
    in_distribution = aggregate.overall_table(runs, "validation")["copy"]
    assert in_distribution["nope"] == pytest.approx({"mean": 1.0, "std": 0.0, "n": 3})
    assert in_distribution["t5"]["mean"] == pytest.approx(0.625)


def test_per_length_curves_pool_splits_then_average_seeds(hand_made):
    curves = aggregate.by_length_table(collect(str(hand_made)))["copy"]
    assert sorted(curves["nope"]) == [2, 3, 4]
    # Length 3: seed 1 pools validation 2/2 and test 3/6 -> 5/8; seeds 2, 3 have 1.0 (2/2).
    assert curves["nope"][3]["mean"] == pytest.approx((0.625 + 1.0 + 1.0) / 3)
    assert curves["nope"][3]["std"] == pytest.approx(np.std([0.625, 1.0, 1.0], ddof=1))
    assert curves["nope"][4] == pytest.approx({"mean": 0.5, "std": 0.5, "n": 3})
    assert curves["t5"][3] == pytest.approx({"mean": 0.75, "std": 0.0, "n": 3})


def test_one_seed_has_no_std_and_shows_a_dash():
    assert aggregate.cell([0.7]) == {"mean": 0.7, "std": None, "n": 1}
    assert markdown.format_cell(aggregate.cell([0.7]), show_n=False) == "0.700 ± –"
    assert markdown.format_cell(aggregate.cell([0.5, 1.0]), show_n=True) == "0.750 ± 0.354 (n=2)"


def test_average_ranks_share_tied_positions():
    assert aggregate.average_ranks({"a": 0.9, "b": 0.5, "c": 0.5, "d": 0.1}) == {
        "a": 1.0,
        "b": 2.5,
        "c": 2.5,
        "d": 4.0,
    }
    # 0.1 + 0.2 != 0.3 in floating point, but the accuracies tie.
    assert aggregate.average_ranks({"a": 0.1 + 0.2, "b": 0.3}) == {"a": 1.5, "b": 1.5}


def test_mean_reciprocal_rank_on_a_hand_worked_example(tmp_path):
    # (A, 1): nope .9 > t5 .5 > alibi .1          -> RR 1, 1/2, 1/3
    # (A, 2): alibi .7 > nope .5 = t5 .5 (rank 2.5) -> RR 0.4, 0.4, 1
    # (B, 1): all 0 (rank 2 each)                  -> RR 1/2 each
    # (B, 2): alibi missing                        -> left out
    scores = {
        ("A", 1): {"nope": 0.9, "t5": 0.5, "alibi": 0.1},
        ("A", 2): {"nope": 0.5, "t5": 0.5, "alibi": 0.7},
        ("B", 1): {"nope": 0.0, "t5": 0.0, "alibi": 0.0},
        ("B", 2): {"nope": 0.2, "t5": 0.3},
    }
    for (task, seed), by_pe in scores.items():
        for pe, accuracy in by_pe.items():
            _write(tmp_path, task, pe, seed, {1: (1.0, 2)}, {2: (accuracy, 10)})
    result = aggregate.mean_reciprocal_rank(collect(str(tmp_path)))
    assert result["mrr"] == pytest.approx(
        {"nope": (1 + 0.4 + 0.5) / 3, "t5": (0.5 + 0.4 + 0.5) / 3, "alibi": (1 / 3 + 1 + 0.5) / 3}
    )
    assert result["groups"] == [["A", 1], ["A", 2], ["B", 1]]
    assert result["incomplete"] == [["B", 2, ["alibi"]]]


def test_the_papers_published_mrr_breaks_ties():
    # Its five MRRs sum to 1 + 1/2 + ... + 1/5: every group had distinct ranks 1..5.
    from lenggen.report import paper

    assert sum(paper.MRR.values()) == pytest.approx(sum(1 / k for k in range(1, 6)), abs=2e-3)


def test_bad_runs_directories_raise_clear_errors(tmp_path):
    with pytest.raises(ReportError, match="does not exist"):
        collect(str(tmp_path / "missing"))
    with pytest.raises(ReportError, match="No results.json under"):
        collect(str(tmp_path))
    first = _write(tmp_path / "a", "copy", "nope", 1, {1: (1.0, 1)}, {2: (0.0, 1)})
    second = _write(tmp_path / "b", "copy", "nope", 1, {1: (1.0, 1)}, {2: (0.0, 1)})
    with pytest.raises(ReportError, match="Two results for task copy, pe nope, seed 1") as error:
        collect(str(tmp_path))
    assert first in str(error.value) and second in str(error.value)
    os.remove(os.path.join(second, "results.json"))
    _write(tmp_path / "c", "copy", "t5", 1, {1: (1.0, 1)}, {2: (0.0, 1)}, train_max_length=5)
    with pytest.raises(ReportError, match="trained up to length 3 in .* but up to 5 in"):
        collect(str(tmp_path))


def test_command_line_reports_a_bad_runs_directory(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lenggen.report", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"lenggen.report: No results.json under {str(tmp_path)!r}" in result.stderr


def test_results_without_identity_fall_back_to_config_json(tmp_path):
    workdir = _write(tmp_path, "ignored", "ignored", 0, {1: (1.0, 1)}, {2: (0.5, 2)})
    with open(os.path.join(workdir, "results.json")) as handle:
        payload = json.load(handle)
    for key in ("task", "pe", "seed"):
        del payload[key]
    with open(os.path.join(workdir, "results.json"), "w") as handle:
        json.dump(payload, handle)
    with pytest.raises(ReportError, match="names no task, pe and seed"):
        collect(str(tmp_path))
    with open(os.path.join(workdir, "config.json"), "w") as handle:
        json.dump(
            {"seed": 7, "task": {"name": "reverse"}, "model": {"pe": {"name": "alibi"}}}, handle
        )
    (run,) = collect(str(tmp_path))
    assert (run.task, run.pe, run.seed) == ("reverse", "alibi", 7)


def test_runs_beyond_the_paper_get_their_own_columns_and_ranking(tmp_path):
    # Task A, seed 1, OOD test: nope .9, fire .7, t5 .5, rotary+randomized .3, rotary .1.
    # The paper's ranking (nope, t5, rotary): RR 1, 1/2, 1/3. Every PE: nope 1, fire 1/2,
    # t5 1/3, rotary+randomized 1/4, rotary 1/5.
    for pe, accuracy in (("nope", 0.9), ("fire", 0.7), ("t5", 0.5), ("rotary", 0.1)):
        _write(tmp_path, "A", pe, 1, {1: (1.0, 2)}, {2: (accuracy, 10)})
    # lenggen.main writes the PE's name; config.json says it trained on randomized positions.
    workdir = _write(tmp_path, "A", "rotary+randomized", 1, {1: (1.0, 2)}, {2: (0.3, 10)})
    with open(os.path.join(workdir, "results.json")) as handle:
        payload = json.load(handle)
    with open(os.path.join(workdir, "results.json"), "w") as handle:
        json.dump(dict(payload, pe="rotary"), handle)
    with open(os.path.join(workdir, "config.json"), "w") as handle:
        json.dump({"model": {"pe": {"name": "rotary", "randomized_max_position": 128}}}, handle)
    assert {run.pe for run in collect(str(tmp_path))} == {
        "nope",
        "fire",
        "t5",
        "rotary",
        "rotary+randomized",
    }

    report = build_report(str(tmp_path), str(tmp_path / "out"))
    assert report["pes"] == ["nope", "t5", "rotary", "fire", "rotary+randomized"]
    assert report["mrr"]["pes"] == ["nope", "t5", "rotary"]
    assert report["mrr"]["mrr"] == pytest.approx({"nope": 1.0, "t5": 1 / 2, "rotary": 1 / 3})
    assert report["mrr_all"]["mrr"] == pytest.approx(
        {"nope": 1.0, "fire": 1 / 2, "t5": 1 / 3, "rotary+randomized": 1 / 4, "rotary": 1 / 5}
    )
    assert report["ood_test"]["A"]["rotary+randomized"]["mean"] == pytest.approx(0.3)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| task | NoPE | T5 | Rotary | FIRE | Rotary+randomized |" in text
    assert "### Including the PEs beyond the paper" in text
    assert "| Rotary+randomized | 0.250 | – |" in text and "| NoPE | 1.000 | 0.687 |" in text
    # A label already carrying the variant is not extended twice.
    with open(os.path.join(workdir, "results.json"), "w") as handle:
        json.dump(dict(payload, pe="rotary+randomized"), handle)
    assert "rotary+randomized" in {run.pe for run in collect(str(tmp_path))}


def test_kerple_and_scaled_rotary_come_after_the_papers_five(tmp_path):
    # results.json names a rotary run scored with context extension `rotary+yarn`
    # (rotary.results_name); KERPLE by its registered name.
    for pe, accuracy in (
        ("kerple", 0.6),
        ("rotary+yarn", 0.4),
        ("ape", 0.1),
        ("rotary", 0.2),
        ("alibi", 0.3),
        ("t5", 0.5),
        ("nope", 0.7),
    ):
        _write(tmp_path, "A", pe, 1, {1: (1.0, 2)}, {2: (accuracy, 10)})
    report = build_report(str(tmp_path), str(tmp_path / "out"))
    assert report["pes"] == ["nope", "t5", "alibi", "rotary", "ape", "kerple", "rotary+yarn"]
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| task | NoPE | T5 | ALiBi | Rotary | APE | KERPLE | Rotary+yarn |" in text
    # Ranked among every PE: nope .7, kerple .6, t5 .5, rotary+yarn .4, ...
    assert report["mrr_all"]["mrr"]["kerple"] == pytest.approx(1 / 2)
    assert report["mrr_all"]["mrr"]["rotary+yarn"] == pytest.approx(1 / 4)


# ---------------------------------------------------------------- a small real sweep

GRID = """
from lenggen import grid


def get_grid(arg=None):
    return grid.product(
        "configs/base.py", ("copy_repeat", "reverse"), ("nope", "alibi"), (11, 12),
        args={{"smoke": True}},
        overrides={{
            "model.num_layers": 1, "train.num_steps": 2, "train.log_every": 2,
            "train.eval_every": 2, "train.checkpoint_every": 2, "eval.metric": "teacher_forced",
            "task.options.max_train_length": 4, "task.options.max_test_length": 7,
            "task.options.num_test_per_length": 4, "data.dir": {data_dir!r},
        }},
    )
"""


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory):
    """2 tasks x 2 PEs x 2 seeds of 2 training steps each, through the command lines."""
    root = tmp_path_factory.mktemp("real_sweep")
    grid = root / "grid.py"
    grid.write_text(GRID.format(data_dir=str(root / "data")))
    # Two runs at a time on one CPU device each; XLA -O0 as in conftest.py (tiny models: the
    # time is compile time); every compile goes to the sweep's shared cache.
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0",
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    sweep = subprocess.run(
        [
            sys.executable,
            "-m",
            "lenggen.sweep",
            f"--grid={grid}",
            f"--runs_dir={root / 'runs'}",
            "--parallel=2",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    (root / "sweep.out").write_text(sweep.stdout)
    report = subprocess.run(
        [sys.executable, "-m", "lenggen.report", str(root / "runs"), f"--out={root / 'out'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert "Report of 8 runs (2 tasks x 2 PEs)" in report.stdout
    return root


def test_real_sweep_ran_every_run_two_at_a_time_then_skips_them(real_sweep):
    out = (real_sweep / "sweep.out").read_text()
    assert out.startswith(
        "Sweep: 8 runs, 0 complete (skipped), 8 to run, 2 at a time.\n"
        "[start 1/8] copy_repeat/nope/11 (new)\n"
        "[start 2/8] copy_repeat/nope/12 (new)\n"
    )
    # Seconds, or minutes from 120 s on (a loaded machine).
    took = r"(\d+ s|\d+\.\d min)"
    assert re.search(rf"\[1/8\] copy_repeat/nope/1[12]: ok in {took}; 7 left, ETA {took}", out)
    assert re.search(r"\[8/8\] reverse/alibi/1[12]: ok in \d+ s; 0 left\n", out)
    assert out.endswith("Sweep finished: 8 succeeded, 0 failed.\n")
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "lenggen.sweep",
            f"--grid={real_sweep / 'grid.py'}",
            f"--runs_dir={real_sweep / 'runs'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout == (
        "Sweep: 8 runs, 8 complete (skipped), 0 to run, 1 at a time.\n"
        "Sweep finished: 0 succeeded, 0 failed.\n"
    )


def _results_files(runs_dir) -> dict[tuple, dict]:
    found = {}
    for task in ("copy_repeat", "reverse"):
        for pe in ("nope", "alibi"):
            for seed in (11, 12):
                with open(os.path.join(runs_dir, task, pe, str(seed), "results.json")) as handle:
                    found[task, pe, seed] = json.load(handle)
    return found


def test_real_sweep_tables_match_the_results_files(real_sweep):
    with open(real_sweep / "out" / "report.json") as handle:
        report = json.load(handle)
    files = _results_files(real_sweep / "runs")
    assert report["num_runs"] == 8
    assert report["tasks"] == ["copy_repeat", "reverse"] and report["pes"] == ["nope", "alibi"]
    assert report["seeds"] == {"copy_repeat": [11, 12], "reverse": [11, 12]}
    assert report["train_max_length"] == {"copy_repeat": 4, "reverse": 4}
    for task in ("copy_repeat", "reverse"):
        for pe in ("nope", "alibi"):
            for split, table in (("test", "ood_test"), ("validation", "in_distribution")):
                values = [files[task, pe, seed]["splits"][split]["overall"] for seed in (11, 12)]
                cell = report[table][task][pe]
                assert cell["n"] == 2
                assert cell["mean"] == pytest.approx(np.mean(values), abs=1e-12)
                assert cell["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
            # Per length: validation holds 2..4 and test 5..7 here (no length in both).
            curves = report["by_length"][task][pe]
            assert sorted(curves, key=int) == [str(n) for n in range(2, 8)]
            for length, cell in curves.items():
                split = "validation" if int(length) <= 4 else "test"
                values = [
                    files[task, pe, seed]["splits"][split]["by_length"][length]["exact_match"]
                    for seed in (11, 12)
                ]
                assert cell["mean"] == pytest.approx(np.mean(values), abs=1e-12)
                assert cell["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)


def test_real_sweep_mrr_matches_ranks_counted_here(real_sweep):
    with open(real_sweep / "out" / "report.json") as handle:
        report = json.load(handle)
    files = _results_files(real_sweep / "runs")
    reciprocal = {"nope": [], "alibi": []}
    for task in ("copy_repeat", "reverse"):
        for seed in (11, 12):
            accuracy = {pe: files[task, pe, seed]["splits"]["test"]["overall"] for pe in reciprocal}
            for pe, mine in accuracy.items():
                better = sum(other > mine for other in accuracy.values())
                tied = sum(other == mine for other in accuracy.values())  # includes itself
                reciprocal[pe].append(1 / (1 + better + (tied - 1) / 2))
    assert report["mrr"]["mrr"] == pytest.approx({pe: np.mean(r) for pe, r in reciprocal.items()})
    assert len(report["mrr"]["groups"]) == 4 and report["mrr"]["incomplete"] == []


def test_real_sweep_markdown_and_plots(real_sweep):
    out = real_sweep / "out"
    with open(out / "report.json") as handle:
        report = json.load(handle)
    text = (out / "report.md").read_text()
    for task, label in (("copy_repeat", "Copy-Repeat"), ("reverse", "Reverse")):
        row = [
            markdown.format_cell(report["ood_test"][task][pe], show_n=False)
            for pe in ("nope", "alibi")
        ]
        assert f"| {label} | {row[0]} | {row[1]} |" in text
        assert f"![{task}](plots/{task}.png)" in text
        # The paper's numbers for the tasks it reported, beside ours.
        paper = report["paper"]["ood_test"][task]
        assert f"| {label} | {paper['nope']:.3f} | {paper['alibi']:.3f} |" in text
    assert "| 4* |" in text and "| 5 |" in text  # training lengths starred
    assert "tied PEs share the average of the ranks they span" in text
    for name in ("summary.png", "plots/copy_repeat.png", "plots/reverse.png"):
        pixels = image.imread(out / name)
        assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 300
    # The summary grid holds both tasks side by side: wider than one task's figure.
    assert (
        image.imread(out / "summary.png").shape[1]
        > image.imread(out / "plots/copy_repeat.png").shape[1]
    )


def test_build_report_in_process_equals_the_command_line(real_sweep, tmp_path):
    again = build_report(str(real_sweep / "runs"), str(tmp_path))
    with open(real_sweep / "out" / "report.json") as handle:
        report = json.load(handle)
    assert json.loads(json.dumps(again)) == report
