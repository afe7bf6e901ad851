r"""Prints what each task's splits hold: sizes, length ranges and examples.

What a researcher checks before spending accelerator hours:

  python -m lenggen.tasks.describe                       # every task, the paper's options
  python -m lenggen.tasks.describe --tasks=addition,scan --examples=3
  python -m lenggen.tasks.describe --tasks=addition --options=scratchpad=full
"""

from collections.abc import Iterable, Sequence

from absl import app, flags

from lenggen import config_args, tasks

_TASKS = flags.DEFINE_list("tasks", None, "Task names (default: all).")
_EXAMPLES = flags.DEFINE_integer("examples", 2, "Examples shown per split.")
_OPTIONS = flags.DEFINE_string(
    "options", "", "Task options as key=value,... (applied to every task listed)."
)


def describe(task: tasks.Task, num_examples: int) -> str:
    """A plain-text summary of `task`'s splits."""
    lines = [f"== {task.name}  {task.options()}"]
    for split in tasks.SPLITS:
        examples = list(task.examples(split))
        lengths = sorted({example.length for example in examples})
        span = f"{lengths[0]}-{lengths[-1]}" if lengths else "none"
        lines.append(
            f"  {split:<10} {len(examples):>7} examples, lengths {span} ({len(lengths)} buckets)"
        )
        for example in examples[:num_examples]:
            lines.append(f"    [{example.length}] {example.source}  =>  {example.target}")
    return "\n".join(lines)


def _options_for(name: str, text: str) -> dict:
    defaults = tasks.default_options(name)
    return {k: v for k, v in config_args.parse(text, **defaults).items() if v != defaults[k]}


def describe_all(names: Iterable[str], num_examples: int, options_text: str = "") -> str:
    return "\n".join(
        describe(tasks.get(name, **_options_for(name, options_text)), num_examples)
        for name in names
    )


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    print(describe_all(_TASKS.value or tasks.names(), _EXAMPLES.value, _OPTIONS.value))


if __name__ == "__main__":
    app.run(main)
