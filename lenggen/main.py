r"""Command line entry point: parses flags and runs an experiment.

  python -m lenggen.main --config=configs/quickstart.py --workdir=runs/quickstart
  python -m lenggen.main --config=configs/base.py:task=reverse_2x,pe=t5,seed=234054 \
      --workdir=runs/reverse_2x/t5/234054 --config.train.batch_size=32
  python -m lenggen.main --config=configs/base.py:task=copy,pe=alibi --workdir=DIR --mode=evaluate

Modes: train, evaluate (the best-validation checkpoint; writes results.json), train_and_evaluate.

Multi-process runs (one process per host): JAX's runtime starts from --coordinator_address,
--num_processes and --process_id, or by itself on Cloud TPU, SLURM and Open MPI (distributed.py).

Exit status (a scheduler can act on it; the reason is one line on stderr, without traceback):
  0    done.
  2    bad input: flags, config file or values, or a workdir that cannot hold this run (a file,
       read-only, another experiment's, locked by another run, checkpoints without
       config.json, damaged config.json or metrics.jsonl, nothing to evaluate), or storage that
       is unsupported, unreachable or not shared by every process. Nothing was written to the
       workdir.
  3    training diverged (NaN/Inf loss); the last good checkpoint is named.
  4    the workdir has checkpoints but none restores (or the best one, when evaluating).
  74   a write failed (e.g. the disk is full): the path is named; the last complete checkpoint
       is intact. Free space and run the same command to resume.
  75   SIGTERM (preemption): during training the current step was checkpointed first; in any
       phase, run the same command to resume. A repeated SIGTERM changes nothing.
  130  SIGINT (Ctrl-C): the same as SIGTERM (the current step is saved), with the shell's status.
  128+signal  stopped by SIGTERM or SIGINT while checking that every process of a multi-process
       run sees the workdir (nothing but that check's files was written).
  1    anything else (with a traceback).
"""

import logging as std_logging
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from lenggen import checkpoint, config_files, config_schema, distributed, rundir
from lenggen.rundir import shared
from lenggen.train import loop, preemption

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_NO_CHECKPOINT = 4
EXIT_IO_ERROR = 74  # EX_IOERR of sysexits.h

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file, optionally with arguments: configs/base.py:task=copy,pe=nope.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and results.")
_MODE = flags.DEFINE_enum("mode", "train_and_evaluate", loop.MODES, "What to run.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite",
    False,
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
    """Prints `lenggen: message` and ends the process with `status`.

    Ends it with os._exit once the logs are flushed: by now every save was waited for (or has
    failed and been reported), and the interpreter's teardown would only add noise, e.g. after
    a failed asynchronous save, TensorStore's pending write callbacks reach asyncio loops Orbax
    has already closed and print one "Event loop is closed" traceback each.
    """
    print(f"lenggen: {message}", file=sys.stderr, flush=True)
    std_logging.shutdown()  # flushes absl's handlers
    sys.stdout.flush()
    if jax.distributed.is_initialized():  # its peers wait for it to leave
        jax.distributed.shutdown()
    os._exit(status)


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
    except SyntaxError as error:  # a config file that is not Python
        _exit(EXIT_BAD_INPUT, f"Config file {error.filename} line {error.lineno}: {error.msg}.")
    except (ValueError, TypeError, OSError) as error:  # e.g. a config file that does not load.
        _exit(EXIT_BAD_INPUT, " ".join(str(error).split()))
    raise AssertionError("unreachable")


class _QuietOrbax(std_logging.Filter):
    """Drops Orbax's and TensorStore's own log records: every failure they log reaches lenggen
    as an exception, reported in one line (a full disk otherwise logs hundreds of lines)."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return "/orbax/" not in record.pathname.replace("\\", "/")


def main(argv: list[str]) -> None:
    preemption.install()  # SIGTERM and SIGINT: a clean stop in every phase (preemption.py)
    if len(argv) > 1:
        _exit(
            EXIT_BAD_INPUT,
            f"Unexpected argument(s) {' '.join(argv[1:])}: every option is a "
            "--flag (e.g. --config=FILE --workdir=DIR). Pass --helpshort to list them.",
        )
    if not flags.FLAGS["verbosity"].present:
        # Progress, metrics and results go to stdout and the workdir; Orbax and TFDS log
        # hundreds of INFO lines per run. --verbosity=0 brings them back.
        logging.set_verbosity(logging.WARNING)
        logging.get_absl_logger().addFilter(_QuietOrbax())
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
    except (preemption.Preempted, preemption.Interrupted) as stop:
        _exit(preemption.exit_status(stop.signum), str(stop))
    except (
        config_schema.ConfigError,
        rundir.WorkdirError,
        rundir.WorkdirLockedError,
        rundir.StorageError,
    ) as error:
        _exit(EXIT_BAD_INPUT, str(error))
    except shared.Interrupted as stop:
        _exit(128 + stop.signum, str(stop))
    except loop.NonFiniteLossError as error:
        _exit(EXIT_DIVERGED, str(error))
    except checkpoint.CheckpointError as error:
        _exit(EXIT_NO_CHECKPOINT, str(error))
    except checkpoint.CheckpointSaveError as error:
        _exit(EXIT_IO_ERROR, str(error))
    except OSError as error:  # any other failed write, e.g. metrics.jsonl on a full disk
        _exit(
            EXIT_IO_ERROR,
            f"{' '.join(str(error).split())}. Fix that (e.g. free space) and "
            "run the same command to resume.",
        )


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
