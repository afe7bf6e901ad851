r"""The CPU proxy of the paper's comparison: Copy-Repeat and Reverse 2x at the paper's lengths
(trained on 2-20 symbols, tested on 21-40), the paper's five PEs and three seeds: 30 runs.

Each task trains at a point of the scale study (configs/grids/scale_study.py) that
the study measured: its recipe (AdamW, 6% warmup, linear decay, clip 1.0, batch 64, no dropout,
the official weight-decay mask), the 2-layer x 128 model, lr 1e-3, and NUM_STEPS per task.
Copy-Repeat: 512 symbols, 8,000 training examples; Reverse 2x: the paper's 100 symbols,
20,000 examples (the paper: 100,000). Run names are the paper grid's, `<task>/<pe>/<seed>`, so
lenggen.report ranks them next to the paper's numbers:

  XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m lenggen.sweep \
      --grid=configs/grids/cpu_proxy.py --runs_dir=runs/cpu_proxy --parallel=2
  python -m lenggen.report runs/cpu_proxy --out=docs/results/cpu_proxy

Budget (CPU time measured by experiments/scale_study.py: user + system of each run, start-up
and evaluation included; docs/results/cpu_proxy/README.md): COST_CPU_SECONDS per task is
(fixed, per step); the 30 runs cost `budget_cpu_hours()` CPU hours, so about half that in
hours on 2 idle cores with `--parallel=2` (each run is one process using about one core).

Grid arguments: `seeds=` (1-3 of the paper's seeds), `pes=` ('+'-joined, default the five),
`tasks=` ('+'-joined, default both).
"""

import os

from lenggen import config_args, grid
from lenggen.report import paper

CONFIG = "configs/base.py"
TASKS = ("copy_repeat", "reverse_2x")
# Steps per task at the study's 2x128 size and lr 1e-3 (docs/results/cpu_proxy/README.md: why).
NUM_STEPS = {"copy_repeat": 1_000, "reverse_2x": 3_000}
SIZE, LEARNING_RATE = "2x128", 1e-3
# (fixed CPU seconds per run, CPU seconds per training step) at SIZE and these settings, from
# pairs of runs measured on the 2-core development machine (docs/results/cpu_proxy/README.md,
# "Cost"): Copy-Repeat 271.5 s at 1,000 steps and 508.9 s at 2,000; Reverse 2x 47.9 s at 100
# steps and 108.9 s at 300.
COST_CPU_SECONDS = {"copy_repeat": (34.1, 0.2374), "reverse_2x": (17.4, 0.3050)}


def _load(path: str, name: str):
    """A config file as a module (config files are loaded by path, not as a package)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return config_args.load_file(os.path.join(here, path), name)


def _study():
    return _load("scale_study.py", "lenggen_configs_grids_scale_study")


def points() -> dict:
    """{task: scale_study.Point} of each task's setting."""
    study = _study()
    return {task: study.Point(SIZE, NUM_STEPS[task], LEARNING_RATE) for task in TASKS}


def budget_cpu_hours(num_pes: int = 5, num_seeds: int = 3) -> float:
    """CPU hours of the grid by COST_CPU_SECONDS."""
    seconds = sum(
        fixed + per_step * NUM_STEPS[task] for task, (fixed, per_step) in COST_CPU_SECONDS.items()
    )
    return num_pes * num_seeds * seconds / 3600


def get_grid(arg: str | None = None) -> list[grid.Run]:
    args = config_args.parse(
        arg, seeds=3, pes="+".join(paper.PAPER_PE_ORDER), randomized="", tasks="+".join(TASKS)
    )
    seeds = tuple(_load("../base.py", "lenggen_configs_base").PAPER_SEEDS)
    if not 1 <= args["seeds"] <= len(seeds):
        raise config_args.ConfigArgumentError(
            f"Grid argument seeds={args['seeds']}: expected 1 to {len(seeds)} of the paper's "
            f"seeds {seeds}."
        )
    tasks = tuple(args["tasks"].split("+"))
    unknown = [task for task in tasks if task not in TASKS]
    if unknown or not tasks:
        raise config_args.ConfigArgumentError(
            f"Grid argument tasks={args['tasks']!r}: expected '+'-joined names of {TASKS}."
        )
    pes, randomized = grid.grid_pes(args)
    if randomized:
        raise config_args.ConfigArgumentError(
            "Grid argument randomized= is not supported by the CPU proxy; use pes=."
        )
    study = _study()
    settings = points()
    overrides = {task: study.point_overrides(settings[task], task) for task in tasks}
    return grid.product(CONFIG, tasks, pes, seeds[: args["seeds"]], task_overrides=overrides)
