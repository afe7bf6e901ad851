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
PCFG is the exception: its runs also get `--config.train.num_steps=N`, the steps of the official
run of that (PE, seed) (PCFG_STEPS), not the base 40k. The official PCFG data config
(configs/data/pcfg.jsonnet) sets 100,000 steps, and its logged final runs (the `best_run_seed_exp`
jobs of results/classic.jsonl, PCFG productivity split) trained 60,000 or 100,000 steps per
(PE, seed), with no rule by PE; the paper reports 40k for every task. So each paper run trains
what its official counterpart did; PEs beyond the paper's and randomized runs get the data
config's 100,000. `smoke=true` keeps the smoke config's steps.
"""

import dataclasses
import os

from lenggen import config_args, grid
from lenggen.report import paper

CONFIG = "configs/base.py"
SECTIONS = {"main": paper.MAIN_TASKS, "maths": paper.MATHS_TASKS, "all": paper.PAPER_TASK_ORDER}
# Tokens of each task's longest test prompt and longest test target (EOS included), counted on
# the datasets of the base recipe's options (word-level tokenizer: one token per word).
TEST_LENGTHS = {
    "copy_repeat": (42, 41),
    "copy_repeat_2x": (42, 81),
    "copy_repeat_change": (46, 41),
    "copy": (42, 41),
    "copy_2x": (42, 82),
    "reverse": (42, 41),
    "reverse_2x": (42, 82),
    "reverse_copy": (42, 82),
    "scan": (11, 49),
    "pcfg": (73, 737),
    "addition": (35, 22),
    "polynomial": (116, 6),
    "sort_single_token": (38, 39),
    "sort_multi_digit": (86, 87),
    "summation": (34, 6),
    "parity": (43, 6),
    "lego": (89, 6),
    "lego_shuffled": (89, 6),
}


# The official PCFG productivity runs' trainer.max_steps per (PE, seed) (their logged configs).
PCFG_STEPS = {
    ("nope", 256788): 100_000,
    ("nope", 234054): 100_000,
    ("nope", 146317): 100_000,
    ("ape", 256788): 60_000,
    ("ape", 234054): 60_000,
    ("ape", 146317): 100_000,
    ("t5", 256788): 100_000,
    ("t5", 234054): 100_000,
    ("t5", 146317): 60_000,
    ("alibi", 256788): 60_000,
    ("alibi", 234054): 60_000,
    ("alibi", 146317): 60_000,
    ("rotary", 256788): 60_000,
    ("rotary", 234054): 100_000,
    ("rotary", 146317): 100_000,
}
# The official PCFG data config's steps, for runs without an official counterpart.
PCFG_CONFIG_STEPS = 100_000


def _with_pcfg_steps(run: grid.Run) -> grid.Run:
    """`run` with PCFG's official training steps added to its overrides (other tasks as is)."""
    task, pe, seed = run.name.split("/")
    if task != "pcfg":
        return run
    steps = PCFG_STEPS.get((pe, int(seed)), PCFG_CONFIG_STEPS)
    return dataclasses.replace(run, overrides=(*run.overrides, ("train.num_steps", steps)))


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
        runs += grid.randomized_product(
            CONFIG, tasks, randomized, seeds, TEST_LENGTHS, budget, args=extra_args
        )
    return runs if args["smoke"] else [_with_pcfg_steps(run) for run in runs]
