"""The scale study: its grid (configs/grids/scale_study.py) and its runner
(experiments/scale_study.py): CPU time of the child, records, summary table and plot."""

import csv
import importlib.util
import json
import os
import sys

import jax
import jax.numpy as jnp
import pytest

from lenggen import config_schema, grid, tasks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


study = _load("experiments/scale_study.py", "scale_study_runner")
study_grid = _load("configs/grids/scale_study.py", "scale_study_grid")


def test_grid_pairs_t5_and_nope_per_point_at_the_papers_lengths():
    runs = grid.load_grid("configs/grids/scale_study.py")
    assert len(runs) == 2 * len(study_grid.POINTS)
    assert [r.name for r in runs[:2]] == [
        "copy_repeat/t5+m2x128_s1000_lr1em3/256788",
        "copy_repeat/nope+m2x128_s1000_lr1em3/256788",
    ]
    built = None
    for run, point in zip(runs[::2], study_grid.POINTS):
        config = grid.resolve_config(run)
        config_schema.validate(config, num_devices=1)
        size = study_grid.SIZES[point.size]
        assert (
            config.model.num_layers,
            config.model.d_model,
            config.model.num_heads,
            config.model.d_kv,
            config.train.num_steps,
            config.train.learning_rate,
        ) == (
            size.num_layers,
            size.d_model,
            size.num_heads,
            size.d_kv,
            point.num_steps,
            point.learning_rate,
        )
        assert config.train.weight_decay_mask == "hf_trainer_4_16"
        built = built or tasks.get(config.task.name, **config.task.options.to_dict())
    assert built.lengths("train") == tuple(range(2, 21))
    assert built.lengths("test") == tuple(range(21, 41))
    # The first points are the cheapest: steps x d_model^2 x layers never falls below the first.
    sizes = study_grid.SIZES
    costs = [
        p.num_steps * sizes[p.size].d_model ** 2 * sizes[p.size].num_layers
        for p in study_grid.POINTS
    ]
    assert costs[0] == min(costs) and costs[-1] == max(costs)
    assert [r.name for r in grid.load_grid("configs/grids/scale_study.py:pes=nope,points=2")] == [
        "copy_repeat/nope+m2x128_s1000_lr1em3/256788",
        "copy_repeat/nope+m2x128_s2000_lr1em3/256788",
    ]
    with pytest.raises(grid.GridError, match="points=99: expected 1 to"):
        grid.load_grid("configs/grids/scale_study.py:points=99")


def test_reverse_2x_and_the_number_of_symbols_are_grid_arguments():
    runs = grid.load_grid("configs/grids/scale_study.py:task=reverse_2x,symbols=16,points=1")
    assert [r.name for r in runs] == [
        "reverse_2x/t5+m2x128_s1000_lr1em3_v16/256788",
        "reverse_2x/nope+m2x128_s1000_lr1em3_v16/256788",
    ]
    config = grid.resolve_config(runs[1])
    assert (config.task.name, config.task.options.num_symbols) == ("reverse_2x", 16)
    default = grid.resolve_config(
        grid.load_grid("configs/grids/scale_study.py:task=reverse_2x,points=1")[0]
    )
    assert default.task.options.num_symbols == 100  # the paper's
    assert study.plot_name("reverse_2x", 16) == "scale_study_reverse_2x_v16.png"
    assert study.plot_name("copy_repeat", 512) == "scale_study.png"
    with pytest.raises(grid.GridError, match="task='copy': expected one of copy_repeat"):
        grid.load_grid("configs/grids/scale_study.py:task=copy")


def test_point_names():
    assert study_grid.Point("4x256", 8_000, 5e-4).name == "m4x256_s8000_lr5em4"
    assert study_grid.Point("2x128", 1_000, 1e-3).name == "m2x128_s1000_lr1em3"


def test_run_one_records_the_childs_own_cpu_time(tmp_path):
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"
    before = os.times()
    code = study.run_one([sys.executable, "-c", burn], str(tmp_path), dict(os.environ))
    after = os.times()
    assert code == 0
    (attempt,) = [json.loads(line) for line in open(tmp_path / study.ATTEMPTS_FILE)]
    child_cpu = attempt["user_seconds"] + attempt["system_seconds"]
    assert child_cpu >= 0.4
    # The same child, as this process's children counters saw it (wait4 reaped only it).
    seen = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    assert child_cpu == pytest.approx(seen, abs=0.02)
    assert attempt["wall_seconds"] >= 0.4 and attempt["exit"] == 0
    assert (
        study.run_one(
            [sys.executable, "-c", "raise SystemExit(3)"], str(tmp_path), dict(os.environ)
        )
        == 3
    )
    assert study.attempts_cpu(str(tmp_path))[2] == 2


def _fake_run(workdir, pe, steps, test_em, resumed=0):
    config = json.loads(
        grid.resolve_config(
            grid.load_grid(f"configs/grids/scale_study.py:pes={pe},points=1")[0]
        ).to_json()
    )
    config["train"]["num_steps"] = steps
    os.makedirs(workdir)
    with open(os.path.join(workdir, "config.json"), "w") as handle:
        json.dump(config, handle)
    splits = {
        "validation": {"overall": 1.0, "by_length": {"20": {"exact_match": 1.0, "n": 5}}},
        "test": {"overall": test_em, "by_length": {"21": {"exact_match": test_em, "n": 4}}},
    }
    with open(os.path.join(workdir, "results.json"), "w") as handle:
        json.dump({"train_max_length": 20, "step": steps, "splits": splits}, handle)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as handle:
        handle.write('{"event": "resumed", "step": 5}\n' * resumed)
    with open(os.path.join(workdir, study.ATTEMPTS_FILE), "w") as handle:
        handle.write(
            json.dumps(
                {"user_seconds": 50.0, "system_seconds": 10.0, "wall_seconds": 100.0, "exit": 0}
            )
            + "\n"
        )


def test_records_summary_and_plot(tmp_path):
    out = tmp_path / "out"
    for pe, steps, em, resumed in (("t5", 1000, 0.05, 0), ("nope", 1000, 0.8, 1)):
        name = f"copy_repeat/{pe}+m2x128_s{steps}_lr1em3/256788"
        workdir = str(tmp_path / "runs" / name)
        _fake_run(workdir, pe, steps, em, resumed)
        record = study.make_record(name, workdir, {"train.num_steps": steps})
        path = study.record_path(str(out), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            json.dump(record, handle)
    records = study.load_records(str(out))
    by_pe = {r["pe"]: r for r in records}
    assert by_pe["t5"]["beyond"] == 0.05 and by_pe["nope"]["in_distribution"] == 1.0
    assert by_pe["t5"]["cpu_seconds"] == 60.0 and by_pe["t5"]["wall_seconds"] == 100.0
    assert by_pe["t5"]["timing_complete"] is True
    assert by_pe["nope"]["timing_complete"] is False  # resumed once, one attempt recorded
    assert by_pe["t5"]["point"] == "m2x128_s1000_lr1em3" and by_pe["t5"]["size"] == "2x128"
    assert by_pe["t5"]["examples_seen"] == 64_000
    assert by_pe["t5"]["by_length"]["test"] == {"21": 0.05}
    study.write_summary(records, str(out))
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [(r["pe"], float(r["beyond"])) for r in rows] == [("nope", 0.8), ("t5", 0.05)]
    table = (out / "summary.md").read_text().splitlines()
    assert len(table) == 4 and "| copy_repeat | 512 | 2x128 |" in table[2]
    assert "(partial)" in table[2]
    assert os.path.getsize(out / "scale_study.png") > 5000
    assert by_pe["t5"]["task"] == "copy_repeat" and by_pe["t5"]["num_symbols"] == 512
    with pytest.raises(study.StudyError, match="No records"):
        study.load_records(str(tmp_path / "empty"))


def test_parameter_count_matches_the_model():
    from lenggen.model.decoder import Decoder

    model = dict(num_layers=2, d_model=16, num_heads=2, d_kv=8, d_ff=32)
    decoder = Decoder(vocab_size=11, dropout_rate=0.0, pe=config_schema.pe_section("nope"), **model)
    params = decoder.init(
        jax.random.key(0), jnp.zeros((1, 4), jnp.int32), jnp.arange(4)[None], jnp.ones((1, 4), bool)
    )["params"]
    total = sum(leaf.size for leaf in jax.tree.leaves(params))
    assert study.count_parameters(model, 11) == total


def test_run_only_takes_the_runs_its_globs_name(tmp_path, capsys):
    out, runs_dir = str(tmp_path / "out"), str(tmp_path / "runs")
    argv = ["run", f"--runs_dir={runs_dir}", f"--out={out}", "--grid_arg=task=reverse_2x"]
    assert study.main([*argv, "--only=*m9x999*"]) == 2
    assert "matches no run" in capsys.readouterr().err and not os.path.exists(runs_dir)
    # The one run the glob selects is recorded already: nothing is left to train, while the
    # grid's other 27 runs (without --only) would all start.
    name = "reverse_2x/nope+m6x384_s8000_lr3em4/256788"
    os.makedirs(os.path.dirname(study.record_path(out, name)), exist_ok=True)
    with open(study.record_path(out, name), "w") as handle:
        handle.write("{}")
    assert study.main([*argv, "--only=*nope+m6x384_s8000*"]) == 0
    assert not os.path.exists(runs_dir) and "/" not in capsys.readouterr().out


def test_records_name_the_workdir_relative_to_the_repository():
    workdir = os.path.join(REPO, "runs", "scale_study", "copy_repeat", "t5+m", "256788")
    config = {"provenance": {"command": f"python -m lenggen.main --workdir={workdir} --x=1"}}
    assert study.portable(config, workdir)["provenance"]["command"] == (
        "python -m lenggen.main --workdir=runs/scale_study/copy_repeat/t5+m/256788 --x=1"
    )
    assert study.portable({"seed": 1}, workdir) == {"seed": 1}
