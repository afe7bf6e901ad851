r"""Beyond the paper: the length-generalization methods published after it, beside the paper's
five PEs, on Copy-Repeat and long addition at cpu_mini's scale. One seed (the paper's first).

Methods (`pes=`, '+'-joined; default all of them):
  the paper's five  nope, t5, alibi, rotary, ape
  rotary+yarn       rotary with YaRN context extension applied in training (Peng et al. 2023;
                    `model.pe.rotary.scaling='yarn'`), factor and original context per task in
                    YARN; added by `yarn=true` (default), named `<task>/rotary+yarn/<seed>`
  abacus            Abacus embeddings (McLeish et al. 2024; docs/methods/abacus.md)
  coupling          position coupling (Cho et al. 2024; docs/methods/position_coupling.md)
  cope              contextual position encoding (Golovneva et al. 2024)
  kerple            KERPLE (Chi et al. 2022)

Tasks:
- Copy-Repeat with cpu_mini's settings (trained on lengths 2-8, tested on 9-16, 1,000 steps).
  Its symbols are no digits, so abacus and coupling see index 0 on every token there: they
  reduce to NoPE plus one learned vector, a check that they cost nothing off arithmetic.
- Long addition (task `long_addition`: both operands and the answer written least-significant
  digit first, the abacus and coupling papers' format), trained on operands of 1-10 digits
  (all 100 digit pairs) and tested on equal-width operands of 11-30 digits, 2,000 steps as
  cpu_mini's addition. McLeish et al. train on up to 20 digits and test up to 100 (the task's
  defaults); at that length one run of this 2-layer model would cost ~5x cpu_mini's addition run
  (sequences of ~300 tokens at test, ~130 in training), so this grid keeps cpu_mini's per-run
  cost and the same 3x test-to-train ratio in digits: 10 -> 30 digits (sequences of ~40 tokens
  in training, ~100 at test). Teacher-forced exact match over the whole target: the target is
  the answer sentence, so it is greedy exact match without the decoding cost.
  Position coupling's runs zero-pad the operands to one width and the answer to one digit more,
  as its paper does (`task.options.zero_pad=true`); everyone else sees unpadded numbers (the
  abacus paper's format). Abacus and coupling draw their training offset from 0..30 here
  (the papers: 0..100 for 20 -> 100 digits), so that the indices of every test digit (up to
  31 with the carry) were trained.

Run (on cpu_mini's 2-core machine ~1-4 min a run; measured times in docs/results/beyond/):

  XLA_FLAGS=--xla_force_host_platform_device_count=2 \
      python -m lenggen.sweep --grid=configs/grids/beyond.py --runs_dir=runs/beyond
  python -m lenggen.report runs/beyond --out=docs/results/beyond

Only some methods, to add to the same runs directory:

  python -m lenggen.sweep --grid=configs/grids/beyond.py:pes=abacus+coupling,yarn=false \
      --runs_dir=runs/beyond
"""

import os

from lenggen import config_args, grid

CONFIG = "configs/base.py"
TASKS = ("long_addition", "copy_repeat")
PAPER_PES = ("nope", "t5", "alibi", "rotary", "ape")
NEW_PES = ("abacus", "coupling", "cope", "kerple")
# Training steps per task: cpu_mini's Copy-Repeat and addition budgets.
NUM_STEPS = {"copy_repeat": 1_000, "long_addition": 2_000}
# Largest training offset of abacus and coupling (module doc).
ARITHMETIC_OFFSET_MAX = 30
# Training-time YaRN: the original context L is the longest training sequence rounded up
# (Copy-Repeat 19 tokens, long addition 39), the factor the ratio of the longest test sequence
# to it (35 / 20 ~ 2; 99 / 40 ~ 2.5).
YARN = {"copy_repeat": (20, 2.0), "long_addition": (40, 2.5)}


def _load(name: str):
    """configs/<name>.py as a module (config files are loaded by path, not as a package)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", f"{name}.py")
    return config_args.load_file(path, f"lenggen_configs_{name}")


def _cpu_mini():
    return _load(os.path.join("grids", "cpu_mini"))


COMMON = {
    **_cpu_mini().COMMON,
    "model.pe.abacus.offset_max": ARITHMETIC_OFFSET_MAX,
    "model.pe.coupling.offset_max": ARITHMETIC_OFFSET_MAX,
}
PER_TASK = {
    "copy_repeat": _cpu_mini().PER_TASK["copy_repeat"],
    "long_addition": {
        "train.num_steps": NUM_STEPS["long_addition"],
        "task.options.num_train": 20_000,
        "task.options.num_validation": 320,
        "task.options.max_train_digits": 10,
        "task.options.max_test_digits": 30,
        # 20 equal-width test pairs (11..30 digits), 32 examples each.
        "task.options.num_test_per_digit_pair": 32,
        "eval.metric": "teacher_forced",
    },
}


# Each arithmetic method in its own paper's format: position coupling zero-pads the operands to
# one width and the answer to one digit more (Cho et al. 2024); abacus writes numbers unpadded
# (McLeish et al. 2024). Both reversed (the task's default).
PER_PE = {("long_addition", "coupling"): {"task.options.zero_pad": True}}


def yarn_overrides(task: str) -> dict:
    """The rotary+yarn variant's keys for `task` (YARN)."""
    original, factor = YARN[task]
    return {
        "model.pe.rotary.scaling": "yarn",
        "model.pe.rotary.scaling_factor": factor,
        "model.pe.rotary.original_max_position": original,
    }


def get_grid(arg: str | None = None) -> list[grid.Run]:
    args = config_args.parse(arg, pes="+".join(PAPER_PES + NEW_PES), yarn=True, seeds=1)
    seeds = tuple(_load("base").PAPER_SEEDS)
    if not 1 <= args["seeds"] <= len(seeds):
        raise config_args.ConfigArgumentError(
            f"Grid argument seeds={args['seeds']}: expected 1 to {len(seeds)} of the paper's "
            f"seeds {seeds}."
        )
    pes = grid.parse_pes(args["pes"], "pes")
    if not pes and not args["yarn"]:
        raise grid.GridError("Grid arguments pes= is empty and yarn=false: expected some run.")
    seeds = seeds[: args["seeds"]]
    runs = []
    for task in TASKS:
        for pe in pes:
            settings = {**PER_TASK[task], **PER_PE.get((task, pe), {})}
            runs += grid.product(
                CONFIG, (task,), (pe,), seeds, overrides=COMMON, task_overrides={task: settings}
            )
        if args["yarn"]:
            runs += grid.product(
                CONFIG,
                (task,),
                ("rotary",),
                seeds,
                overrides=COMMON,
                task_overrides={task: {**PER_TASK[task], **yarn_overrides(task)}},
                variant="yarn",
            )
    return runs
