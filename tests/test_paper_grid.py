"""The paper grid's PCFG runs train what the official runs of the same (PE, seed) trained."""

import importlib.util

from lenggen import grid

PAPER_SEEDS = (256788, 234054, 146317)


def _paper_module():
    spec = importlib.util.spec_from_file_location("paper_grid_module", "configs/grids/paper.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pcfg_runs_train_the_official_runs_steps_and_other_tasks_the_base_40k():
    paper = _paper_module()
    # Official trainer.max_steps of the PCFG productivity best_run_seed_exp runs, by the official
    # PE names (pe_none, pe_abs_sin, pe_t5, pe_alibi, pe_rotary), seeds 256788/234054/146317.
    official = {
        "none": (100, 100, 100),
        "abs_sin": (60, 60, 100),
        "t5": (100, 100, 60),
        "alibi": (60, 60, 60),
        "rotary": (60, 100, 100),
    }
    ours = {"none": "nope", "abs_sin": "ape", "t5": "t5", "alibi": "alibi", "rotary": "rotary"}
    by_name = {run.name: run for run in grid.load_grid("configs/grids/paper.py")}
    for name, thousands in official.items():
        for seed, k in zip(PAPER_SEEDS, thousands):
            run = by_name[f"pcfg/{ours[name]}/{seed}"]
            assert dict(run.overrides) == {"train.num_steps": k * 1000}
            assert grid.resolve_config(run).train.num_steps == k * 1000
    assert len(paper.PCFG_STEPS) == 15
    assert by_name["scan/t5/146317"].overrides == ()
    assert grid.resolve_config(by_name["copy/alibi/256788"]).train.num_steps == 40_000


def test_pcfg_runs_beyond_the_paper_get_the_data_configs_steps_and_smoke_keeps_its_own():
    runs = {
        run.name: run for run in grid.load_grid("configs/grids/paper.py:pes=fire,randomized=t5")
    }
    assert dict(runs["pcfg/fire/256788"].overrides) == {"train.num_steps": 100_000}
    assert dict(runs["pcfg/t5+randomized/146317"].overrides)["train.num_steps"] == 100_000
    assert "train.num_steps" not in dict(runs["scan/fire/256788"].overrides)
    smoke = {run.name: run for run in grid.load_grid("configs/grids/paper.py:smoke=true")}
    assert smoke["pcfg/t5/146317"].overrides == ()
