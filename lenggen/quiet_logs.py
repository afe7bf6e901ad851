"""Keeps libraries' routine chatter out of a normal run's output.

TFDS prints "Downloading and preparing dataset Unknown size ..." (there is nothing to download:
the builder generates the task's examples) and warns about its custom builder config; Orbax logs
~25 INFO lines and two warnings per read-only restore. None of it says anything a user must act
on. Errors still show, and `--verbosity=0` (absl) brings INFO back for debugging.
"""

import contextlib
import io
import logging
import os
from collections.abc import Iterator

from absl import flags
from absl import logging as absl_logging


class _BelowLevelFrom(logging.Filter):
    """Drops records under `level` logged from files inside any of `packages`."""

    def __init__(self, level: int, packages: tuple[str, ...]):
        super().__init__()
        self.level = level
        self.markers = tuple(f"{os.sep}{name}{os.sep}" for name in packages)

    def filter(self, record: logging.LogRecord) -> bool:
        from_package = any(marker in record.pathname for marker in self.markers)
        return record.levelno >= self.level or not from_package


@contextlib.contextmanager
def below(level: int, *packages: str) -> Iterator[None]:
    """Within the block, drops log records under `level` from the named packages (by source
    path, e.g. "tensorflow_datasets", "orbax"), on absl's logger and the root logger."""
    drop = _BelowLevelFrom(level, packages)
    loggers = (absl_logging.get_absl_logger(), logging.getLogger())
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


@contextlib.contextmanager
def tfds_preparation() -> Iterator[None]:
    """Around building and preparing a TFDS dataset: no download banner (TFDS prints it to
    stdout), no warnings about the custom config or a not-yet-written dataset_info.json."""
    with below(logging.ERROR, "tensorflow_datasets"), contextlib.redirect_stdout(io.StringIO()):
        yield


def warnings_only_unless_asked() -> None:
    """For a command run with absl's app.run: log WARNING and above unless --verbosity was
    given (absl's default is INFO, which lets Orbax and JAX log dozens of lines)."""
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
