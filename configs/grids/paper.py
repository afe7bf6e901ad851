r"""The paper's grid (Kazemnejad et al. 2023): every task x the five PEs x the three seeds.

`tasks=main` (default): the ten tasks of the paper's headline table and main figure, in its
order (lenggen.report.paper.MAIN_TASKS; docs/paper.md, "Tasks") — 10 x 5 x 3 = 150 runs of the
base recipe (configs/base.py: 40k steps, batch 64; one copy run took ~5.6 h on a V100 in the
paper). `tasks=maths`: the eight maths and reasoning tasks (MATHS_TASKS) without a scratchpad,
120 runs.
`tasks=all`: both, 270 runs. `smoke=true` shrinks every run to a CPU run of seconds (to try the
machinery; the workdirs then hold smoke results, so use another --runs_dir).

Beyond the paper: `pes=` names the PEs, '+'-joined (default the paper's five; e.g.
`pes=nope+ape+t5+alibi+rotary+fire` adds FIRE), and `randomized=` the PEs also trained with
randomized positions (Ruoss et al. 2023; e.g. `randomized=rotary+t5`), runs named
`<task>/<pe>+randomized/<seed>`, with M and the decoding budget set per task from its longest
test prompt and target (TEST_LENGTHS; lenggen.grid.randomized_product). `pes=fire` alone
gives only the FIRE runs, to add to a sweep directory that holds the paper's.

  python -m lenggen.sweep --grid=configs/grids/paper.py --runs_dir=runs/paper --mode=print
  python -m lenggen.sweep --grid=configs/grids/paper.py:tasks=maths --runs_dir=runs/paper
  python -m lenggen.sweep --grid=configs/grids/paper.py:pes=fire,randomized=rotary+t5 \
      --runs_dir=runs/paper
  python -m lenggen.report runs/paper

Each run is `python -m lenggen.main --config=configs/base.py:task=T,pe=P,seed=S
--workdir=RUNS_DIR/T/P/S`; the report ranks the PEs as the paper does (mean reciprocal rank).
"""

import os

from lenggen import config_args, grid
from lenggen.report import paper

CONFIG = "configs/base.py"
SECTIONS = {"main": paper.MAIN_TASKS, "maths": paper.MATHS_TASKS, "all": paper.PAPER_TASK_ORDER}
# Tokens of each task's longest test prompt and longest test target (EOS included), counted on
# the datasets of the base recipe's options (word-level tokenizer: one token per word).
TEST_LENGTHS = {
    "copy_repeat": (42, 41), "copy_repeat_2x": (42, 81), "copy_repeat_change": (46, 41),
    "copy": (42, 41), "copy_2x": (42, 82), "reverse": (42, 41), "reverse_2x": (42, 82),
    "reverse_copy": (42, 82), "scan": (11, 49), "pcfg": (73, 737),
    "addition": (35, 22), "polynomial": (116, 6), "sort_single_token": (38, 39),
    "sort_multi_digit": (86, 87), "summation": (34, 6), "parity": (43, 6), "lego": (89, 6),
    "lego_shuffled": (89, 6),
}


def _base():
    """configs/base.py as a module (config files are loaded by path, not as a package)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "base.py")
    return config_args.load_file(path, "lenggen_configs_base")


def get_grid(arg: str | None = None) -> list[grid.Run]:
    args = config_args.parse(
        arg, tasks="main", smoke=False, pes="+".join(paper.PAPER_PE_ORDER), randomized=""
    )
    if args["tasks"] not in SECTIONS:
        raise config_args.ConfigArgumentError(
            f"Grid argument tasks={args['tasks']!r}: expected one of {', '.join(SECTIONS)}."
        )
    pes, randomized = grid.grid_pes(args)
    base, tasks = _base(), SECTIONS[args["tasks"]]
    extra_args = {"smoke": True} if args["smoke"] else None
    seeds = tuple(base.PAPER_SEEDS)
    runs = grid.product(CONFIG, tasks, pes, seeds, args=extra_args)
    if randomized:
        budget = base.get_config(f"smoke={args['smoke']}").eval.max_new_tokens
        runs += grid.randomized_product(CONFIG, tasks, randomized, seeds, TEST_LENGTHS, budget,
                                         args=extra_args)  # fmt: skip
    return runs
