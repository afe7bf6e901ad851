r"""Command line entry point: parses flags and runs an experiment.

  python -m lenggen.main --config=configs/quickstart.py --workdir=runs/quickstart
  python -m lenggen.main --config=configs/base.py:task=reverse_2x,pe=t5,seed=234054 \
      --workdir=runs/reverse_2x/t5/234054 --config.train.batch_size=32
  python -m lenggen.main --config=configs/base.py:task=copy,pe=alibi --workdir=DIR --mode=evaluate

Modes: train, evaluate (the best-validation checkpoint; writes results.json), train_and_evaluate.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from lenggen.train import loop

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally with arguments: configs/base.py:task=copy,pe=nope.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and results.")
_MODE = flags.DEFINE_enum("mode", "train_and_evaluate", loop.MODES, "What to run.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False,
    "Start from scratch in a workdir that holds a different config (its files are moved "
    "aside to WORKDIR/replaced-<time>/, not deleted).",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        # Progress, metrics and results go to stdout and the workdir; Orbax and TFDS log
        # hundreds of INFO lines per run. --verbosity=0 brings them back.
        logging.set_verbosity(logging.WARNING)
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    loop.run(_CONFIG.value, _WORKDIR.value, _MODE.value, overwrite=_OVERWRITE.value)


if __name__ == "__main__":
    app.run(main)
