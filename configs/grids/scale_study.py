r"""The scale study: where does the paper's Copy-Repeat result (T5 extrapolates, ~0.77 beyond the
training lengths; NoPE ~0.99) appear as the CPU model grows and trains longer?

Copy-Repeat at the paper's lengths (trained on 2-20 symbols, tested on 21-40), T5 vs NoPE (`pes=`
adds others), one seed, over POINTS: (model size, training steps, peak learning rate). The
points are ordered cheapest first, T5 and NoPE of a point next to each other, so a study cut
short still holds complete T5-vs-NoPE comparisons at the smallest settings. Everything else is
configs/grids/cpu_mini.py's recipe (AdamW, 6% warmup, linear decay, clip 1.0, batch 64, no
dropout, the official weight-decay mask) and data scale (512 symbols, so at most 512 distinct
examples per length; the paper: 6,052).

Run names are `copy_repeat/<pe>+<point>/<seed>`, `<point>` like `m2x128_s2000_lr1em3`
(2 layers x d_model 128, 2,000 steps, lr 1e-3). `experiments/scale_study.py` runs them one at a
time, records each run's CPU time and exact match by length, and summarises:

  nice -n 19 python experiments/scale_study.py run --runs_dir=runs/scale_study
  python experiments/scale_study.py summarize

On a 2-core machine, one runner per PE (`--grid_arg=pes=t5` and `--grid_arg=pes=nope`, started
together) keeps the two PEs of a point finishing together.

Grid arguments: `pes=` ('+'-joined, default t5+nope), `points=` (a count: the first N points),
`seeds=` (1-3 of the paper's seeds), `task=` (copy_repeat, default, or reverse_2x: whether NoPE
fits Reverse 2x in distribution as the model grows), `symbols=` (the number of symbols; runs
named `..._v<symbols>`). `lenggen.sweep` runs it too (without the CPU-time records):

  python -m lenggen.sweep --grid=configs/grids/scale_study.py --runs_dir=runs/scale_study
"""

import dataclasses
import os

from lenggen import config_args, grid

CONFIG = "configs/base.py"
TASK = "copy_repeat"
PES = ("t5", "nope")


@dataclasses.dataclass(frozen=True)
class Size:
    num_layers: int
    d_model: int
    num_heads: int
    d_kv: int
    d_ff: int

    @property
    def label(self) -> str:
        return f"{self.num_layers}x{self.d_model}"


# cpu_mini's model (4 heads of 32), then heads of 64 as in the paper's base model (12 x 64),
# d_ff = 4 d_model throughout.
SIZES = {
    "2x128": Size(2, 128, 4, 32, 512),
    "4x256": Size(4, 256, 4, 64, 1024),
    "6x384": Size(6, 384, 6, 64, 1536),
}


@dataclasses.dataclass(frozen=True)
class Point:
    size: str
    num_steps: int
    learning_rate: float

    @property
    def name(self) -> str:
        """`m2x128_s2000_lr1em3`: an identifier (lenggen.sweep run variants must be)."""
        mantissa, exponent = f"{self.learning_rate:.0e}".split("e")
        return f"m{self.size}_s{self.num_steps}_lr{mantissa}em{-int(exponent)}"


# Cheapest first (cost ~ steps x size): per size its base learning rate (smaller for bigger
# models), then more steps, then the learning rate around the base. 2x128 at 1,000 steps is
# cpu_mini's Copy-Repeat budget.
POINTS = (
    Point("2x128", 1_000, 1e-3),
    Point("2x128", 2_000, 1e-3),
    Point("4x256", 1_000, 5e-4),
    Point("2x128", 4_000, 1e-3),
    Point("4x256", 2_000, 5e-4),
    Point("2x128", 2_000, 3e-4),
    Point("6x384", 1_000, 3e-4),
    Point("4x256", 4_000, 5e-4),
    Point("2x128", 8_000, 1e-3),
    Point("6x384", 2_000, 3e-4),
    Point("4x256", 2_000, 1e-3),
    Point("6x384", 4_000, 3e-4),
    Point("4x256", 8_000, 5e-4),
    Point("6x384", 8_000, 3e-4),
)

COMMON = {
    "model.dropout_rate": 0.0,
    "train.end_learning_rate": 1e-5,
    "train.log_every": 250,
    "train.eval_every": 500,
    "train.checkpoint_every": 500,
    "task.options.min_length": 2,
    "task.options.max_train_length": 20,
    "task.options.max_test_length": 40,
    "task.options.num_validation": 320,
    "task.options.num_test_per_length": 64,
    "eval.batch_size": 64,
    # The whole target is the answer: teacher-forced exact match is the paper's greedy one.
    "eval.metric": "teacher_forced",
    "eval.num_samples": 8,
}
# Per task (`task=`): its data and decoding budget (the longest test target, EOS included,
# rounded up to 16: Copy-Repeat 41, Reverse 2x 82).
TASKS = {
    # 512 symbols x 19 training lengths: 8,000 training examples (421 per length) and 320 for
    # validation fit in the 512 distinct examples each length has.
    "copy_repeat": {
        "task.options.num_symbols": 512,
        "task.options.num_train": 8_000,
        "eval.max_new_tokens": 48,
    },
    # The paper's 100 symbols (cpu_mini: 16), 20,000 examples (the paper: 100,000).
    "reverse_2x": {
        "task.options.num_symbols": 100,
        "task.options.num_train": 20_000,
        "eval.max_new_tokens": 96,
    },
}


def point_overrides(point: Point, task: str = TASK, num_symbols: int = 0) -> dict:
    """The overrides of one point of `task` (0 symbols: TASKS' number)."""
    size = SIZES[point.size]
    symbols = {"task.options.num_symbols": num_symbols} if num_symbols else {}
    return {
        **COMMON,
        **TASKS[task],
        **symbols,
        "model.num_layers": size.num_layers,
        "model.d_model": size.d_model,
        "model.num_heads": size.num_heads,
        "model.d_kv": size.d_kv,
        "model.d_ff": size.d_ff,
        "train.num_steps": point.num_steps,
        "train.learning_rate": point.learning_rate,
    }


def _paper_seeds() -> tuple[int, ...]:
    """configs/base.PAPER_SEEDS (config files are loaded by path, not as a package)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "base.py")
    return tuple(config_args.load_file(path, "lenggen_configs_base").PAPER_SEEDS)


def get_grid(arg: str | None = None) -> list[grid.Run]:
    args = config_args.parse(
        arg, pes="+".join(PES), points=len(POINTS), seeds=1, randomized="", task=TASK, symbols=0
    )
    if args["task"] not in TASKS:
        raise config_args.ConfigArgumentError(
            f"Grid argument task={args['task']!r}: expected one of {', '.join(TASKS)}."
        )
    if args["symbols"] < 0:
        raise config_args.ConfigArgumentError(
            f"Grid argument symbols={args['symbols']}: expected a positive number of symbols "
            "(0: the task's default in TASKS)."
        )
    seeds = _paper_seeds()
    if not 1 <= args["seeds"] <= len(seeds):
        raise config_args.ConfigArgumentError(
            f"Grid argument seeds={args['seeds']}: expected 1 to {len(seeds)} of the paper's "
            f"seeds {seeds}."
        )
    if not 1 <= args["points"] <= len(POINTS):
        raise config_args.ConfigArgumentError(
            f"Grid argument points={args['points']}: expected 1 to {len(POINTS)} (the first N "
            "of POINTS, cheapest first)."
        )
    pes, randomized = grid.grid_pes(args)
    if randomized:
        raise config_args.ConfigArgumentError(
            "Grid argument randomized= is not supported by the scale study; use pes=."
        )
    runs = []
    # A number of symbols other than the task's default names the runs `..._v<symbols>`.
    suffix = f"_v{args['symbols']}" if args["symbols"] else ""
    for point in POINTS[: args["points"]]:
        overrides = point_overrides(point, args["task"], args["symbols"])
        runs += grid.product(
            CONFIG,
            (args["task"],),
            pes,
            seeds[: args["seeds"]],
            overrides=overrides,
            variant=point.name + suffix,
        )
    return runs
