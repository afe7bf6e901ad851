"""configs/grids/cpu_proxy.py: Copy-Repeat and Reverse 2x at the paper's lengths, 5 PEs x 3
seeds, at the scale study's setting, within the CPU budget its docstring states."""

import pytest

from lenggen import config_args, config_schema, grid, tasks
from lenggen.report import paper

GRID = "configs/grids/cpu_proxy.py"
proxy = config_args.load_file(GRID, "cpu_proxy_grid")
paper_grid = config_args.load_file("configs/grids/paper.py", "paper_grid")


def test_grid_is_two_tasks_by_five_pes_by_three_seeds_at_the_papers_lengths():
    runs = grid.load_grid(GRID)
    assert len(runs) == 2 * 5 * 3
    assert runs[0].name == "copy_repeat/nope/256788"
    assert {r.name.split("/")[1] for r in runs} == set(paper.PAPER_PE_ORDER)
    for task in ("copy_repeat", "reverse_2x"):
        config = grid.resolve_config(next(r for r in runs if r.name.startswith(task + "/t5/")))
        config_schema.validate(config, num_devices=1)
        built = tasks.get(config.task.name, **config.task.options.to_dict())
        assert built.lengths("train") == tuple(range(2, 21))
        assert built.lengths("test") == tuple(range(21, 41))
        model = config.model
        assert (model.num_layers, model.d_model, model.num_heads, model.d_kv) == (2, 128, 4, 32)
        assert config.train.num_steps == proxy.NUM_STEPS[task]
        assert config.train.learning_rate == 1e-3
        assert config.train.weight_decay_mask == "hf_trainer_4_16"
        # Greedy decoding's budget holds the longest test target and its EOS (the paper grid's
        # count at these lengths), so teacher-forced exact match can credit every test length.
        assert config.eval.max_new_tokens >= paper_grid.TEST_LENGTHS[task][1]
        assert config.eval.metric == "teacher_forced"
    reverse = grid.resolve_config(runs[-1])
    assert (reverse.task.name, reverse.task.options.num_symbols) == ("reverse_2x", 100)


def test_budget_is_the_measured_cost_and_fits_three_hours_on_two_cores():
    # 15 runs per task: (34.1 + 0.2374 x 1,000) + (17.4 + 0.3050 x 3,000) = 271.5 + 932.4 CPU
    # seconds a (PE, seed): 5.02 CPU hours, ~2.5 hours on 2 cores.
    assert proxy.budget_cpu_hours() == pytest.approx(15 * (271.5 + 932.4) / 3600)
    assert proxy.budget_cpu_hours() / 2 <= 3.0
    assert proxy.budget_cpu_hours(num_pes=1, num_seeds=1) == pytest.approx(1203.9 / 3600)


def test_arguments_select_seeds_pes_and_tasks():
    runs = grid.load_grid(f"{GRID}:seeds=1,pes=t5+nope,tasks=reverse_2x")
    assert [r.name for r in runs] == ["reverse_2x/t5/256788", "reverse_2x/nope/256788"]


@pytest.mark.parametrize(
    "arg, message",
    [
        ("seeds=4", "seeds=4: expected 1 to 3"),
        ("tasks=copy", "tasks='copy': expected '\\+'-joined names"),
        ("randomized=t5", "randomized= is not supported"),
    ],
)
def test_bad_arguments(arg, message):
    with pytest.raises(grid.GridError, match=message):
        grid.load_grid(f"{GRID}:{arg}")


def test_copy_repeat_runs_are_the_scale_studys_first_point_so_its_workdirs_count():
    # The proxy's Copy-Repeat setting is the study's m2x128_s1000_lr1em3 point: the same config
    # for every PE, so a finished study workdir copied to RUNS_DIR/copy_repeat/<pe>/<seed> is a
    # complete proxy run (lenggen.sweep.run_status compares the configs' training keys).
    proxy_runs = {r.name: r for r in grid.load_grid(f"{GRID}:seeds=1,tasks=copy_repeat")}
    study_runs = grid.load_grid(
        "configs/grids/scale_study.py:points=1,pes=" + "+".join(paper.PAPER_PE_ORDER)
    )
    assert len(study_runs) == len(proxy_runs) == 5
    for run in study_runs:
        pe = run.name.split("/")[1].partition("+")[0]
        ours = grid.resolve_config(proxy_runs[f"copy_repeat/{pe}/256788"])
        assert grid.resolve_config(run).to_dict() == ours.to_dict()
