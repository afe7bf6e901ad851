r"""Command line entry point: parses flags and runs an experiment.

  python -m lenggen.main --config=configs/quickstart.py --workdir=runs/quickstart
  python -m lenggen.main --config=configs/base.py:task=reverse_2x,pe=t5,seed=234054 \
      --workdir=runs/reverse_2x/t5/234054 --config.train.batch_size=32
  python -m lenggen.main --config=configs/base.py:task=copy,pe=alibi --workdir=DIR --mode=evaluate

Modes: train, evaluate (the best-validation checkpoint; writes results.json), train_and_evaluate.

Multi-process runs (one process per host): JAX's runtime starts from --coordinator_address,
--num_processes and --process_id, or by itself on Cloud TPU, SLURM and Open MPI (distributed.py).

Exit status (a scheduler can act on it; the reason is one line on stderr, without traceback):
  0   done.
  2   bad input: flags, config values, a workdir holding another experiment or locked by
      another run, or storage that is unsupported, unreachable or not shared by every
      process. Nothing ran.
  3   training diverged (NaN/Inf loss); the last good checkpoint is named.
  4   the workdir has checkpoints but none restores.
  75  preempted (SIGTERM): the current step was checkpointed; run the same command to resume.
  1   anything else (with a traceback).
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from lenggen import checkpoint, config_files, config_schema, distributed, rundir
from lenggen.rundir import shared
from lenggen.train import loop, preemption

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_NO_CHECKPOINT = 4

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
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for a multi-process run."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, from 0.")
flags.mark_flags_as_required(["config", "workdir"])


def _exit(status: int, message: str) -> None:
    print(f"lenggen: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def _root_cause(error: BaseException) -> BaseException:
    """The exception a config file raised, inside the wrappers absl and ml_collections put
    around it (they re-raise it with its traceback pasted into the message)."""
    while (isinstance(error, flags.Error) or "Traceback" in str(error)) and error.__context__:
        error = error.__context__
    return error


def _innermost_message(error: BaseException) -> str:
    """The message inside ml_collections' AttributeError(KeyError("'x' Did you mean ...")."""
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]
    return " ".join(str(error.args[0] if error.args else error).split())


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with config mistakes reported in one line instead of a traceback."""
    try:
        # --config may name a shipped config (configs/quickstart.py from anywhere; config_files).
        return flags.FLAGS(config_files.resolve_argv(argv, "config"))
    except flags.Error as error:
        text = str(error)
        if "Traceback" in text:
            # A config file's get_config raised (e.g. configs/base.py:task=kopy); absl quotes
            # its whole traceback, while its own message says what is wrong.
            text = str(_root_cause(error))
        _exit(EXIT_BAD_INPUT, f"{text}\nPass --helpshort to list the flags.")
    except (KeyError, AttributeError) as error:  # --config.<key>=... naming an unknown key.
        _exit(EXIT_BAD_INPUT, f"Unknown config key {_innermost_message(error)}")
    except (ValueError, TypeError, OSError) as error:  # e.g. a config file that does not load.
        _exit(EXIT_BAD_INPUT, " ".join(str(error).split()))
    raise AssertionError("unreachable")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        # Progress, metrics and results go to stdout and the workdir; Orbax and TFDS log
        # hundreds of INFO lines per run. --verbosity=0 brings them back.
        logging.set_verbosity(logging.WARNING)
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    try:
        config = _CONFIG.value
        config.keys()  # ml_collections defers a config file's load error to the first access.
    except OSError as error:
        _exit(EXIT_BAD_INPUT, " ".join(str(error.__cause__ or error).split()))
    try:
        started = distributed.initialize(
            _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value
        )
    except distributed.DistributedFlagsError as error:
        _exit(EXIT_BAD_INPUT, str(error))
    logging.info("lenggen: %s.", started)
    try:
        loop.run(config, _WORKDIR.value, _MODE.value, overwrite=_OVERWRITE.value)
    except preemption.Preempted as stop:
        _exit(preemption.EXIT_CODE, str(stop))
    except (config_schema.ConfigError, rundir.WorkdirConflictError, rundir.WorkdirLockedError,
            rundir.StorageError) as error:
        _exit(EXIT_BAD_INPUT, str(error))
    except shared.Interrupted as stop:
        _exit(128 + stop.signum, str(stop))
    except loop.NonFiniteLossError as error:
        _exit(EXIT_DIVERGED, str(error))
    except checkpoint.CheckpointError as error:
        _exit(EXIT_NO_CHECKPOINT, str(error))


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
