r"""The paper's grid (Kazemnejad et al. 2023): every task x the five PEs x the three seeds.

`tasks=main` (default): the ten tasks of the paper's headline table and main figure, in its
order (../shared/reference/facts.md) — Copy-Repeat, Copy-Repeat 2x, Copy-Repeat+Change, Copy,
Copy 2x, Reverse, Reverse 2x, Reverse+Copy, SCAN, PCFG — 10 x 5 x 3 = 150 runs of the base recipe
(configs/base.py: 40k steps, batch 64; one copy run took ~5.6 h on a V100 in the paper).
`tasks=maths`: the eight maths and reasoning tasks without a scratchpad, 120 runs.
`tasks=all`: both, 270 runs. `smoke=true` shrinks every run to a CPU run of seconds (to try the
machinery; the workdirs then hold smoke results, so use another --runs_dir).

  python -m lenggen.sweep --grid=configs/grids/paper.py --runs_dir=runs/paper --mode=print
  python -m lenggen.sweep --grid=configs/grids/paper.py:tasks=maths --runs_dir=runs/paper
  python -m lenggen.report runs/paper

Each run is `python -m lenggen.main --config=configs/base.py:task=T,pe=P,seed=S
--workdir=RUNS_DIR/T/P/S`; the report ranks the PEs as the paper does (mean reciprocal rank).
"""

import importlib.util
import os

from lenggen import config_args, sweep

CONFIG = "configs/base.py"
# The headline table's rows and columns (facts.md), by their registered names.
MAIN_TASKS = (
    "copy_repeat", "copy_repeat_2x", "copy_repeat_change", "copy", "copy_2x",
    "reverse", "reverse_2x", "reverse_copy", "scan", "pcfg",
)
MATHS_TASKS = (
    "addition", "polynomial", "sort_single_token", "sort_multi_digit", "summation", "parity",
    "lego", "lego_shuffled",
)
PAPER_PES = ("nope", "ape", "t5", "alibi", "rotary")
SECTIONS = {"main": MAIN_TASKS, "maths": MATHS_TASKS, "all": MAIN_TASKS + MATHS_TASKS}


def _paper_seeds() -> tuple[int, ...]:
    """configs/base.PAPER_SEEDS (config files are loaded by path, not as a package)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "base.py")
    spec = importlib.util.spec_from_file_location("lenggen_configs_base", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(module.PAPER_SEEDS)


def get_grid(arg: str | None = None) -> list[sweep.Run]:
    args = config_args.parse(arg, tasks="main", smoke=False)
    if args["tasks"] not in SECTIONS:
        raise config_args.ConfigArgumentError(
            f"Grid argument tasks={args['tasks']!r}: expected one of {', '.join(SECTIONS)}."
        )
    return sweep.product(
        CONFIG, SECTIONS[args["tasks"]], PAPER_PES, _paper_seeds(),
        args={"smoke": True} if args["smoke"] else None,
    )
