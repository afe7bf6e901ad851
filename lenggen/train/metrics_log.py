"""Where training metrics go besides stdout: TensorBoard event files (and W&B when asked).

Every workdir gets TensorBoard events (`WORKDIR/events.out.tfevents.*`), so
`tensorboard --logdir runs` shows a sweep's runs side by side, each named by its path. Tags:

  train/loss, train/token_accuracy, train/learning_rate, train/steps_per_second
  validation/exact_match, validation/best_exact_match, validation/exact_match_by_length/<L>
  final/{validation,test}/exact_match[_by_length/<L>]   (the best checkpoint's final scores)
  results (text: the by-length table), provenance (text), and the HPARAMS tab: the config's
  training keys with the final exact matches as its metrics.
Lengths are zero-padded (`.../009`, `.../010`) so TensorBoard's alphabetical order is numeric.

The writer is tensorboardX: it writes the event protocol with protobuf alone. TensorBoard's own
`tf.summary` needs TensorFlow, and clu's metric writers write through `tf.summary` (or torch's
writer): both would add a framework this JAX project does not otherwise need. Reading the
events back needs only the `tensorboard` package (its EventAccumulator), in the `tensorboard`
and `test` extras.

W&B mirrors the same scalars when `config.log.wandb_project` is set (`pip install wandb`); it
is never needed otherwise and is imported only then.

Only process 0 writes; the other processes get a writer that does nothing.
"""

import importlib.util
import json
import time
from collections.abc import Mapping
from typing import Any

import ml_collections

from lenggen import config_schema, results

HPARAM_KEYS = ("seed", "task", "model", "train")
HPARAM_METRICS = ("final/test/exact_match", "final/validation/exact_match")


class LoggingConfigError(config_schema.ConfigError):
    """config.log asks for a sink that cannot be used (e.g. W&B without the wandb package)."""


def stamped(record: Mapping[str, Any]) -> dict[str, Any]:
    """`record` with `wall_time`: seconds since the Unix epoch (TensorBoard's convention)."""
    return {**record, "wall_time": round(time.time(), 3)}


class SmoothedRate:
    """Exponential moving average of a rate (steps/s) over logging windows, for the ETA.

    A single window's rate jumps with the machine's load and with validations or checkpoints
    that fall inside it; the EMA with weight `alpha` on the newest window settles the estimate.
    The first window after a (re)start also holds the train step's compilation, so it is only
    provisional: the second window replaces it, later ones are blended in.
    """

    def __init__(self, alpha: float = 0.3):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.value: float | None = None
        self.windows = 0

    def update(self, rate: float) -> float:
        self.windows += 1
        if self.windows <= 2:
            self.value = rate
        else:
            self.value = self.alpha * rate + (1.0 - self.alpha) * self.value
        return self.value

    def eta_seconds(self, remaining_steps: int) -> float:
        """Seconds to run `remaining_steps` at the smoothed rate (inf before any window)."""
        if not self.value:
            return float("inf")
        return remaining_steps / self.value


def hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config's training keys, flattened to dotted names with TensorBoard-friendly values
    (numbers, strings and booleans; anything else as its JSON text)."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for key in sorted(node):
                walk(node[key], f"{prefix}{key}.")
        elif isinstance(node, bool | int | float | str):
            flat[prefix[:-1]] = node
        else:
            flat[prefix[:-1]] = json.dumps(node)

    as_dict = json.loads(config.to_json())
    for key in HPARAM_KEYS:
        walk(as_dict.get(key), f"{key}.")
    return flat


class NullWriter:
    """What every process but 0 gets: accepts the calls, writes nothing."""

    def train(self, step: int, metrics: Mapping[str, float], steps_per_second: float) -> None:
        pass

    def validation(self, step: int, summary: Mapping[str, Any], best: float) -> None:
        pass

    def final(self, payload: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class _FailedWrites:
    """Wraps tensorboardX's events file writer (used by its background thread and by `flush`):
    a write that fails (e.g. a full disk) is recorded instead of raised. Raised in its thread it
    would end the thread, and every later event would then block on the thread's full queue;
    `Writer` raises the recorded error in the main thread instead, naming the file."""

    def __init__(self, inner: Any, path: str):
        self._inner, self.path = inner, path
        self.error: OSError | None = None

    def _call(self, name: str, *args) -> None:
        if self.error is None:
            try:
                getattr(self._inner, name)(*args)
            except OSError as error:
                self.error = error

    def write_event(self, event: Any) -> None:
        self._call("write_event", event)

    def flush(self) -> None:
        self._call("flush")

    def close(self) -> None:
        self._call("close")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _guard_failures(summary_writer: Any, workdir: str) -> _FailedWrites | None:
    """Puts `_FailedWrites` between tensorboardX's writer and its events file (None where
    tensorboardX's internals are not as expected: failures are then raised as it raises them)."""
    event_writer = getattr(summary_writer.file_writer, "event_writer", None)
    worker = getattr(event_writer, "_worker", None)
    inner = getattr(event_writer, "_ev_writer", None)
    if inner is None or getattr(worker, "_record_writer", None) is not inner:
        return None
    guard = _FailedWrites(inner, str(getattr(inner, "_file_name", workdir)))
    event_writer._ev_writer = worker._record_writer = guard
    return guard


class Writer(NullWriter):
    """TensorBoard events in `workdir` (plus W&B when `config.log.wandb_project` is set).

    Args:
      workdir: the run's directory; the events file is written at its top level, so the run's
        name in TensorBoard is its path under --logdir.
      config: the run's config (hyperparameters; config.log).
      provenance: shown as text beside the hyperparameters.
      purge_step: the step a resumed run restarts from. Events a previous process logged at or
        after it (before it was interrupted) are hidden by TensorBoard, as the new ones replace
        them.
    """

    def __init__(
        self,
        workdir: str,
        config: ml_collections.ConfigDict,
        provenance: Mapping[str, Any] | None = None,
        purge_step: int | None = None,
    ):
        from tensorboardX import SummaryWriter
        from tensorboardX import summary as tbx_summary

        # tensorboardX names the file by the second and truncates an existing one: the suffix
        # keeps a resumed run, or the final evaluation, from overwriting an earlier file.
        self._tb = SummaryWriter(
            workdir,
            purge_step=purge_step or None,
            flush_secs=30,
            filename_suffix=f".{time.time_ns()}",
        )
        self._failures = _guard_failures(self._tb, workdir)
        self._reported = False
        params = hparams(config)
        for proto in tbx_summary.hparams(params, {m: 0.0 for m in HPARAM_METRICS}):
            self._tb.file_writer.add_summary(proto)
        if provenance is not None:
            self._tb.add_text("provenance", _code_block(json.dumps(provenance, indent=2)), 0)
        self._wandb = _start_wandb(config.log, workdir, params)

    def _raise_failure(self) -> None:
        """Raises a write of the events file that failed (OSError naming the file), once."""
        failures = self._failures
        if failures is not None and failures.error is not None and not self._reported:
            self._reported = True
            error = failures.error
            raise OSError(error.errno, error.strerror, failures.path) from error

    def _scalars(self, step: int, values: Mapping[str, float]) -> None:
        self._raise_failure()
        for tag, value in values.items():
            self._tb.add_scalar(tag, value, step)
        if self._wandb is not None:
            self._wandb.log(dict(values), step=step)

    def train(self, step: int, metrics: Mapping[str, float], steps_per_second: float) -> None:
        values = {f"train/{k}": float(v) for k, v in metrics.items()}
        values["train/steps_per_second"] = float(steps_per_second)
        self._scalars(step, values)

    def validation(self, step: int, summary: Mapping[str, Any], best: float) -> None:
        values = {"validation/exact_match": summary["overall"], "validation/best_exact_match": best}
        values.update(_by_length("validation", summary))
        self._scalars(step, values)
        self._tb.flush()
        self._raise_failure()

    def final(self, payload: Mapping[str, Any]) -> None:
        """The final evaluation (results.json's payload): scalars at its checkpoint's step and
        the by-length table as text."""
        step = int(payload["step"])
        values = {}
        for split, summary in payload["splits"].items():
            values[f"final/{split}/exact_match"] = summary["overall"]
            values.update(_by_length(f"final/{split}", summary))
        self._scalars(step, values)
        self._tb.add_text("results", _code_block(results.format_table(payload)), step)
        self._tb.flush()
        self._raise_failure()

    def close(self) -> None:
        self._tb.close()
        self._raise_failure()
        if self._wandb is not None:
            self._wandb.finish()


def _by_length(split: str, summary: Mapping[str, Any]) -> dict[str, float]:
    by_length = summary["by_length"]
    return {
        f"{split}/exact_match_by_length/{int(length):03d}": entry["exact_match"]
        for length, entry in sorted(by_length.items(), key=lambda kv: int(kv[0]))
    }


def _code_block(text: str) -> str:
    """TensorBoard renders text as Markdown: indent 4 spaces to keep the columns."""
    return "\n".join("    " + line for line in text.splitlines())


def check(config: ml_collections.ConfigDict) -> None:
    """Raises LoggingConfigError, before anything is written, for a sink that cannot start."""
    if config.log.wandb_project and importlib.util.find_spec("wandb") is None:
        raise LoggingConfigError(
            f"config.log.wandb_project={config.log.wandb_project!r} needs the wandb package: "
            "pip install wandb (or leave config.log.wandb_project empty)."
        )
    if config.log.wandb_project and not config.log.tensorboard:
        raise LoggingConfigError(
            "config.log.wandb_project is set but config.log.tensorboard is false: W&B mirrors "
            "the TensorBoard writer's scalars, so set config.log.tensorboard=true."
        )


def _start_wandb(log: ml_collections.ConfigDict, workdir: str, params: Mapping[str, Any]):
    if not log.wandb_project:
        return None
    import wandb

    return wandb.init(
        project=log.wandb_project, name=workdir, dir=workdir, config=dict(params), resume="allow"
    )


def open_writer(
    workdir: str,
    config: ml_collections.ConfigDict,
    *,
    is_writer: bool,
    provenance: Mapping[str, Any] | None = None,
    purge_step: int | None = None,
) -> NullWriter:
    """A Writer on the process that writes (process 0) when config.log.tensorboard is on;
    otherwise a NullWriter."""
    if not is_writer or not config.log.tensorboard:
        return NullWriter()
    return Writer(workdir, config, provenance=provenance, purge_step=purge_step)
