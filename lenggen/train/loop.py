"""Train and evaluate one experiment: config in, checkpoints and results files out.

`run` reads top to bottom in stages: validate, mesh, workdir, data, model and state, resume,
train (with validation and checkpoints), final evaluation on the best-validation checkpoint.
"""

import contextlib
import functools
import math
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from lenggen import checkpoint, config_schema, provenance, results, rundir, sharding, tasks
from lenggen.data import dataset, loader
from lenggen.data import tokenizer as tokenizer_lib
from lenggen.evaluate import exact_match
from lenggen.evaluate import steps as eval_steps
from lenggen.model import decoder, decoding, positional
from lenggen.model.positional import randomized, rotary
from lenggen.rundir import shared as shared_lib
from lenggen.rundir import storage
from lenggen.train import metrics_log, preemption
from lenggen.train import optimizer as optimizer_lib
from lenggen.train import state as state_lib

MODES = ("train", "evaluate", "train_and_evaluate")
DEFAULT_DATA_DIR = "~/.cache/lenggen/datasets"


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or Inf loss, parameters or optimizer state."""


def _log(message: str) -> None:
    """Progress for people: stdout on process 0 (absl's log also keeps it)."""
    logging.info(message)
    if jax.process_index() == 0:
        print(message, flush=True)


def _barrier(name: str) -> None:
    """Waits until every process gets here (nothing to wait for in a single process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def state_bytes_per_device(abstract: Any, shardings: Any) -> int:
    """Bytes one device holds of a tree of ShapeDtypeStructs laid out by `shardings`."""
    total = 0
    for leaf, leaf_sharding in zip(
        jax.tree.leaves(abstract), jax.tree.leaves(shardings), strict=True
    ):
        total += math.prod(leaf_sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
    return total


class Experiment:
    """Everything built from a config before the first step: mesh, data, model, jitted steps."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.config = config
        self.workdir = workdir
        self.rundir = rundir.RunDir(workdir)
        self.started = provenance.now()

        # ---- Mesh.
        self.mesh = sharding.make_mesh(config.mesh.shape)
        # Code, versions, devices and command, for config.json and results.json.
        self.provenance = provenance.collect(self.mesh, started=self.started)

        # ---- Data: the task's TFDS dataset, prepared once per (task, options).
        self.task = tasks.get(config.task.name, **config.task.options.to_dict())
        data_dir = data_dir_of(config)
        # Process 0 writes the files first; the others then only open them (dataset.py).
        if jax.process_index() != 0:
            _barrier("lenggen_dataset_prepared")
        self.data = dataset.prepare(self.task, data_dir)
        for note in self.data.notes:
            _log(note)
        if jax.process_index() == 0:
            _barrier("lenggen_dataset_prepared")
        self.tokenizer = self.data.tokenizer
        self.train_seq_len = loader.round_up(self.data.max_sequence_length("train"), 8)
        self.train_max_length = max(self.task.lengths("train"))

        # ---- Model, checked against the longest sequence it will be evaluated on.
        # Built for the mesh's devices: their platform picks the attention kernels.
        self.model = decoder.Decoder.from_config(
            config.model,
            self.tokenizer.vocab_size,
            platform=sharding.platform(self.mesh),
            digit_ids=self.tokenizer.digit_ids,
        )
        longest = max(self.data.max_sequence_length(s) for s in ("validation", "test"))
        longest = loader.round_up(longest, 16) + config.eval.max_new_tokens
        self._check_positions_fit(longest)

        # ---- Optimizer, the train state's layout on the mesh, and the jitted steps.
        self.schedule = optimizer_lib.learning_rate_schedule(config.train)
        self.optimizer = optimizer_lib.make_optimizer(config.train)
        self.layout = state_lib.layout(self.model, self.optimizer, self.mesh, self.train_seq_len)
        self._check_memory_fits()
        self.dropout_key = jax.random.fold_in(jax.random.key(config.seed), 1)
        self.train_step = state_lib.jit_train_step(
            self.model, self.optimizer, self.schedule, self.layout, self.mesh
        )
        batch_sharding = sharding.batch_sharding(self.mesh)
        # With randomized positions both take each example's positions from one table drawn
        # for its prompt and the decoding budget, so their verdicts agree (evaluate/steps.py).
        self.teacher_forced = jax.jit(
            functools.partial(
                eval_steps.teacher_forced_correct,
                model=self.model,
                max_new_tokens=config.eval.max_new_tokens,
            ),
            in_shardings=(self.layout.param_sharding, batch_sharding),
            out_shardings=batch_sharding,
        )
        self.greedy = jax.jit(
            functools.partial(
                decoding.greedy_decode,
                self.model,
                max_new_tokens=config.eval.max_new_tokens,
                eos_id=tokenizer_lib.EOS_ID,
            ),
            in_shardings=(self.layout.param_sharding, batch_sharding, batch_sharding),
            out_shardings=batch_sharding,
        )

    def _check_positions_fit(self, longest: int) -> None:
        pe = self.config.model.pe.name
        limit = positional.build(self.config.model.pe, self.config.model.num_heads).max_position()
        if limit is not None and longest - 1 > limit:
            raise config_schema.ConfigError(
                f"Evaluation needs positions up to {longest - 1} (longest test sequence plus "
                f"config.eval.max_new_tokens) but positional encoding {pe!r} represents "
                f"positions up to {limit}. Raise its max_length (config.model.pe.{pe}) or "
                "shorten the test lengths."
            )
        # Randomized positions (Ruoss et al.) draw every sequence's positions from [0, M).
        longest_sequence = max(
            self.train_seq_len,
            *(self.data.max_sequence_length(s) for s in ("validation", "test")),
        )
        try:
            randomized.check_fits(
                randomized.max_position_of(self.config.model.pe), longest_sequence, limit
            )
        except ValueError as error:
            raise config_schema.ConfigError(f"config.{error}") from None

    def _check_memory_fits(self) -> None:
        """Refuses a train state that cannot fit on a device, before anything compiles.

        Counts parameters, Adam moments and one gradient per device from the state's sharded
        layout: a lower bound (activations come on top). The budget is
        config.train.max_bytes_per_device when positive, else what the device reports
        (`memory_stats()` of the mesh's first device, None on CPU: then nothing is checked).
        """
        knob = self.config.train.max_bytes_per_device
        if not isinstance(knob, int) or isinstance(knob, bool) or knob < 0:
            raise config_schema.ConfigError(
                f"config.train.max_bytes_per_device={knob!r}: expected an integer >= 0 "
                "(0: use the device's reported memory)."
            )
        stats = sharding.device_memory_stats(self.mesh)
        budget = knob or stats.get("bytes_limit", 0)
        if not budget:
            return
        params = state_bytes_per_device(
            self.layout.abstract["params"], self.layout.sharding["params"]
        )
        total = state_bytes_per_device(self.layout.abstract, self.layout.sharding) + params
        if total > budget:
            source = "config.train.max_bytes_per_device" if knob else "the device's bytes_limit"
            raise config_schema.ConfigError(
                f"The model needs at least {total:,} bytes per device ({total / 2**30:.2f} GiB: "
                f"parameters, Adam moments and gradients, of which {params:,} bytes of "
                f"parameters, on mesh {dict(self.mesh.shape)}), more than the {budget:,} bytes "
                f"{source} allows. Use a smaller config.model, more devices on the mesh's model "
                "axis (config.mesh.shape), or a larger budget."
            )

    def initial_state(self) -> dict:
        return state_lib.initial_state(
            self.model,
            self.optimizer,
            self.layout,
            self.train_seq_len,
            jax.random.key(self.config.seed),
        )

    def evaluate(self, params: Any, split: str, metric: str) -> exact_match.SplitEvaluation:
        return exact_match.evaluate_split(
            params,
            self.data.splits[split],
            task=self.task,
            tokenizer=self.tokenizer,
            mesh=self.mesh,
            batch_size=self.config.eval.batch_size,
            metric=metric,
            teacher_forced_fn=self.teacher_forced,
            greedy_fn=self.greedy,
            num_samples=self.config.eval.num_samples,
        )


def _event(experiment: Experiment, **record) -> None:
    """Appends one event, with its wall-clock time, to WORKDIR/metrics.jsonl (process 0)."""
    if jax.process_index() == 0:
        experiment.rundir.append_event(metrics_log.stamped(record))


def _all_finite(tree: Any) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _resume(experiment: Experiment, checkpoints: checkpoint.Checkpoints) -> tuple[int, dict]:
    """(step, state) of the newest checkpoint that restores intact, else (0, a fresh state)."""
    for entry in checkpoints.removed_unfinished:
        _log(f"Removed {entry}: a save that a crash interrupted (never restored).")
    for warning in checkpoints.warnings:
        _log(warning)
    restored = checkpoints.restore_newest(experiment.layout.restore_target())
    step = restored.step if restored else 0
    # The mesh as [data, model] sizes (config_schema.MESH_AXES).
    devices = dict(devices=jax.device_count(), mesh_shape=list(experiment.mesh.devices.shape))
    if jax.process_index() == 0:
        experiment.rundir.trim_metrics(step)
        if restored is not None:
            _warn_if_devices_changed(experiment, step, devices)
    if restored is None:
        _event(experiment, event="started", step=0, **devices)
        return 0, experiment.initial_state()
    for (bad, reason), moved in zip(restored.skipped, restored.moved_to, strict=True):
        _log(
            f"Checkpoint of step {bad} cannot be restored ({reason}); moved it to {moved} "
            f"and fell back to step {step}."
        )
        _event(
            experiment,
            event="checkpoint_fallback",
            step=bad,
            restored_step=step,
            reason=reason,
            moved_to=moved,
        )
    _log(f"Resumed from step {step} in {experiment.workdir}.")
    _event(experiment, event="resumed", step=step, **devices)
    return step, restored.state


def _warn_if_devices_changed(experiment: Experiment, step: int, devices: dict) -> None:
    """One line when the run trained on another device count until now: it goes on, but the
    reductions split differently, so it is not bit-identical to an uninterrupted run."""
    earlier = [e for e in experiment.rundir.read_events() if "devices" in e]
    if earlier and earlier[-1]["devices"] != devices["devices"]:
        _log(
            f"Note: resuming on {devices['devices']} devices (mesh {devices['mesh_shape']}), but "
            f"the steps up to {step} ran on {earlier[-1]['devices']} (mesh "
            f"{earlier[-1].get('mesh_shape')}): "
            "training continues, but not bit-identical to a run on one device count (sums "
            "are split differently)."
        )


def train(
    experiment: Experiment,
    checkpoints: checkpoint.Checkpoints,
    on_start: Callable[[], None] = lambda: None,
) -> dict:
    """Trains from the newest intact checkpoint (or from scratch) to `config.train.num_steps`.

    `on_start` runs once the state to train from is known (restored, or fresh).

    Raises:
      preemption.Preempted: on SIGTERM or SIGINT, after checkpointing the step it was on.
      NonFiniteLossError: on a NaN/Inf loss or parameters; no such state is ever checkpointed.
    """
    config = experiment.config
    train_cfg = config.train

    def stop_if_not_finite(done: int, what: str) -> None:
        good = checkpoints.latest_step()
        _event(experiment, event="non_finite", step=done, what=what, last_good_checkpoint=good)
        checkpoints.wait()
        raise NonFiniteLossError(
            f"{what} at step {done}. Last good checkpoint: "
            + (f"step {good} in {experiment.workdir}/checkpoints." if good else "none.")
            + " Try a lower config.train.learning_rate (in a new workdir, or with --overwrite)."
        )

    def stop_for_preemption(done: int) -> None:
        checkpoints.wait()
        signum = watch.signum or signal.SIGTERM  # another process's signal: a preemption
        message = (
            f"{preemption.describe(signum)} at step {done}/{train_cfg.num_steps}: saved "
            f"{experiment.workdir}/checkpoints/{done}. Run the same command to resume."
        )
        _log(message)
        _event(experiment, event="preempted", step=done, signal=signal.Signals(signum).name)
        raise preemption.Preempted(message, step=done, signum=signum)

    with preemption.Watch() as watch, contextlib.ExitStack() as closing:
        # ---- Resume (a signal from here on stops at a step boundary with a checkpoint).
        start_step, state = _resume(experiment, checkpoints)
        on_start()
        best = checkpoints.best()
        best_metric = best[1] if best else -1.0
        batches = loader.TrainBatches(
            experiment.data.splits["train"],
            global_batch_size=train_cfg.batch_size,
            seq_len=experiment.train_seq_len,
            seed=config.seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        all_finite = jax.jit(_all_finite, out_shardings=sharding.replicated(experiment.mesh))
        board = closing.enter_context(
            contextlib.closing(
                metrics_log.open_writer(
                    experiment.workdir,
                    config,
                    is_writer=jax.process_index() == 0,
                    provenance=experiment.provenance,
                    purge_step=start_step,
                )
            )
        )

        # ---- Loop.
        window_start, window_steps = time.perf_counter(), 0
        rate = metrics_log.SmoothedRate()
        for step in range(start_step, train_cfg.num_steps):
            checkpoints.check()  # an asynchronous save that failed stops the run here
            batch = loader.to_global(batches.get(step), experiment.mesh)
            state, metrics = experiment.train_step(state, batch, experiment.dropout_key)
            done = step + 1
            window_steps += 1
            last = done == train_cfg.num_steps
            should_log = done % train_cfg.log_every == 0 or last
            should_save = done % train_cfg.checkpoint_every == 0 or last

            if should_log or should_save:
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if not np.isfinite(metrics["loss"]):
                    stop_if_not_finite(done, f"Loss is {metrics['loss']}")
            if should_log:
                elapsed = time.perf_counter() - window_start
                steps_per_second = window_steps / max(elapsed, 1e-9)
                rate.update(steps_per_second)  # the ETA uses the smoothed rate
                eta = rate.eta_seconds(train_cfg.num_steps - done)
                _log(
                    f"step {done}/{train_cfg.num_steps}  loss {metrics['loss']:.4f}  "
                    f"token_acc {metrics['token_accuracy']:.3f}  "
                    f"lr {metrics['learning_rate']:.2e}  "
                    f"{steps_per_second:.2f} steps/s  ETA {eta / 60:.1f} min"
                )
                _event(
                    experiment,
                    event="train",
                    step=done,
                    steps_per_second=steps_per_second,
                    **metrics,
                )
                board.train(done, metrics, steps_per_second)
                window_start, window_steps = time.perf_counter(), 0

            should_validate = done % train_cfg.eval_every == 0 or last
            preempted = watch.requested()
            if (should_validate or should_save or preempted) and not bool(all_finite(state)):
                # Checked before anything may save this state (best or latest).
                stop_if_not_finite(done, "Parameters or optimizer state are not finite")

            if should_validate:
                validation = experiment.evaluate(state["params"], "validation", "teacher_forced")
                accuracy = validation.summary["overall"]
                improved = accuracy > best_metric
                if improved:
                    best_metric = accuracy
                    checkpoints.save_best(done, state, accuracy)
                _log(
                    f"step {done}: validation exact match {accuracy:.4f}"
                    f"{' (best so far, saved)' if improved else f' (best {best_metric:.4f})'}"
                )
                _event(
                    experiment,
                    event="validation",
                    step=done,
                    exact_match=accuracy,
                    best=best_metric,
                )
                board.validation(done, validation.summary, best_metric)
                window_start, window_steps = time.perf_counter(), 0

            if should_save or preempted:
                checkpoints.save(done, state)
            if preempted:
                stop_for_preemption(done)
        checkpoints.wait()
        if watch.requested():  # Arrived with no step left to run: the checkpoints are final.
            stop_for_preemption(train_cfg.num_steps)
    return state


def evaluate(experiment: Experiment, checkpoints: checkpoint.Checkpoints) -> dict:
    """Scores validation and test with the best-validation checkpoint; writes the results files."""
    config = experiment.config
    best = checkpoints.best()
    if best is not None:
        step = best[0]
        state = checkpoints.restore_best(experiment.layout.restore_target())
    elif (newest := checkpoints.restore_newest(experiment.layout.restore_target())) is not None:
        step, state = newest.step, newest.state
    else:
        raise checkpoint.CheckpointError(
            f"No checkpoint in {experiment.workdir}: train first (--mode=train_and_evaluate)."
        )
    _log(f"Evaluating the checkpoint of step {step} (metric: {config.eval.metric}).")
    splits, samples = {}, []
    for split in ("validation", "test"):
        evaluation = experiment.evaluate(state["params"], split, config.eval.metric)
        splits[split] = evaluation.summary
        samples += [dict(split=split, **sample) for sample in evaluation.samples]
    payload = dict(
        train_max_length=experiment.train_max_length,
        step=int(step),
        splits=splits,
        task=config.task.name,
        pe=rotary.results_name(config.model.pe),
        seed=config.seed,
        metric=config.eval.metric,
        provenance=provenance.finished(experiment.provenance),
    )
    if jax.process_index() == 0:
        run_dir = experiment.rundir
        # Each file is replaced atomically: a crash leaves the previous version whole.
        run_dir.write_json(rundir.RESULTS_FILE, payload)
        run_dir.write_lines(rundir.SAMPLES_FILE, [results.json_line(s) for s in samples])
        # Drawn under another name, then moved over the old plot: a plotting error leaves it.
        partial = run_dir.file(f".partial-{rundir.PLOT_FILE}")
        results.plot_accuracy_vs_length(
            payload,
            partial,
            title=f"{config.task.name}, {payload['pe']} (seed {config.seed}, step {step})",
        )
        storage.move(partial, run_dir.file(rundir.PLOT_FILE))
        # TensorBoard last: the results files above are what scripts and the report read.
        with contextlib.closing(
            metrics_log.open_writer(
                experiment.workdir, config, is_writer=True, provenance=payload["provenance"]
            )
        ) as board:
            board.final(payload)
        print(results.format_table(payload), flush=True)
    return payload


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    mode: str = "train_and_evaluate",
    *,
    overwrite: bool = False,
) -> dict | None:
    """Validates `config`, then trains and/or evaluates it in `workdir`.

    Nothing is written to the workdir until the config, the workdir and the experiment built
    from them check out; config.json is written once the run is known to start (its
    checkpoint restored, or none to restore). `--mode=evaluate` scores only a run trained with
    the same config (rundir.files.EVALUATION_KEYS and the eval, mesh and data keys may differ).

    Returns the results payload when the mode evaluates, else None.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}. Valid modes: {', '.join(MODES)}.")
    config_schema.validate(config, jax.device_count())
    evaluating = mode == "evaluate"
    # ---- Storage: an unsupported or unreachable workdir or data dir fails here in seconds,
    # creating nothing; then every process must see the workdir process 0 sees.
    storage.check_reachable(workdir)
    storage.check_reachable(data_dir_of(config))
    shared_lib.check(workdir)
    metrics_log.check(config)
    run_dir = rundir.RunDir(workdir)
    run_dir.check(config, overwrite=overwrite and not evaluating, evaluating=evaluating)
    _log(
        f"Setting up {config.task.name}, {config.model.pe.name}, seed {config.seed} "
        f"({mode}) in {workdir}."
    )
    # Builds data, model and state layout, and checks they fit, before the workdir is locked
    # and touched: a config refused here leaves the workdir as it was.
    experiment = Experiment(config, workdir)
    lock = _lock(run_dir)
    try:
        if not evaluating:
            if jax.process_index() == 0:  # Only process 0 writes the workdir's files.
                moved = run_dir.prepare(overwrite=overwrite)
                if moved:
                    _log(
                        f"--overwrite: moved what {workdir} held to {moved}; starting from scratch."
                    )
            _barrier("lenggen_workdir_prepared")
        checkpoints = checkpoint.Checkpoints(
            workdir, keep=config.train.checkpoints_to_keep, create=not evaluating
        )

        def record_config() -> None:
            if jax.process_index() == 0:
                run_dir.record(config, provenance=experiment.provenance)

        # The steps are traced under the mesh: compiled Pallas kernels (pallas_flash on a TPU
        # or GPU) run per shard of it (jax.shard_map), as XLA cannot partition them.
        try:
            with jax.set_mesh(experiment.mesh):
                if mode in ("train", "train_and_evaluate"):
                    train(experiment, checkpoints, on_start=record_config)
                if mode in ("evaluate", "train_and_evaluate"):
                    trained = " training is complete (checkpoints saved);" if not evaluating else ""
                    with preemption.phase(
                        f"during the final evaluation:{trained} results files are replaced "
                        "atomically, so none is half-written. Run the same command to evaluate "
                        "again."
                    ):
                        return evaluate(experiment, checkpoints)
            return None
        finally:
            checkpoints.wait()
            checkpoints.close()
    finally:
        if lock is not None:
            lock.release()


def data_dir_of(config: ml_collections.ConfigDict) -> str:
    """config.data.dir (gs:// as given, local with `~` expanded), else the local default."""
    directory = config.data.dir or DEFAULT_DATA_DIR
    return directory if storage.is_gcs(directory) else os.path.expanduser(directory)


def _lock(run_dir: rundir.RunDir) -> rundir.WorkdirLock | None:
    """Process 0 takes the workdir's lock; every process raises WorkdirLockedError if it
    could not (the others only learn that it failed)."""
    lock, refusal = None, None
    if jax.process_index() == 0:
        lock = run_dir.lock()
        try:
            lock.acquire()
        except rundir.WorkdirLockedError as error:
            lock, refusal = None, error
    if jax.process_count() > 1:
        taken = multihost_utils.broadcast_one_to_all(np.int32(refusal is None))
        if not int(taken) and refusal is None:
            refusal = rundir.WorkdirLockedError(
                f"Process 0 could not lock workdir {run_dir} (another run holds it)."
            )
    if refusal is not None:
        raise refusal
    if lock is not None and lock.recovered is not None:
        _log(f"Took over the lock of a run that is gone ({lock.recovered}).")
    return lock
