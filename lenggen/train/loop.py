"""Train and evaluate one experiment: config in, checkpoints and results files out.

`run` reads top to bottom in stages: validate, mesh, workdir, data, model and state, resume,
train (with validation and checkpoints), final evaluation on the best-validation checkpoint.
"""

import functools
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from lenggen import checkpoint
from lenggen import config_schema
from lenggen import results
from lenggen import sharding
from lenggen import tasks
from lenggen import workdir as workdir_lib
from lenggen.data import dataset
from lenggen.data import loader
from lenggen.data import tokenizer as tokenizer_lib
from lenggen.evaluate import exact_match
from lenggen.model import decoder
from lenggen.model import decoding
from lenggen.model import positional
from lenggen.train import optimizer as optimizer_lib
from lenggen.train import state as state_lib
from lenggen.train import step as step_lib

MODES = ("train", "evaluate", "train_and_evaluate")
DEFAULT_DATA_DIR = "~/.cache/lenggen/datasets"


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or Inf loss."""


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _log(message: str) -> None:
    """Progress for people: stdout on process 0 (absl's log also keeps it)."""
    logging.info(message)
    if jax.process_index() == 0:
        print(message, flush=True)


class Experiment:
    """Everything built from a config before the first step: mesh, data, model, jitted steps."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.config = config
        self.workdir = workdir

        # ---- Mesh.
        self.mesh = sharding.make_mesh(config.mesh.shape)

        # ---- Data: the task's TFDS dataset, prepared once per (task, options).
        self.task = tasks.get(config.task.name, **config.task.options.to_dict())
        data_dir = os.path.expanduser(config.data.dir or DEFAULT_DATA_DIR)
        self.data = dataset.prepare(self.task, data_dir)
        self.tokenizer = self.data.tokenizer
        self.train_seq_len = _round_up(self.data.max_sequence_length("train"), 8)
        self.train_max_length = max(self.task.lengths("train"))

        # ---- Model, checked against the longest sequence it will be evaluated on.
        self.model = decoder.Decoder.from_config(config.model, self.tokenizer.vocab_size)
        longest = max(self.data.max_sequence_length(s) for s in ("validation", "test"))
        longest = _round_up(longest, 16) + config.eval.max_new_tokens
        self._check_positions_fit(longest)

        # ---- Optimizer, the train state's layout on the mesh, and the jitted steps.
        self.schedule = optimizer_lib.learning_rate_schedule(config.train)
        self.optimizer = optimizer_lib.make_optimizer(config.train)
        self.layout = state_lib.layout(self.model, self.optimizer, self.mesh, self.train_seq_len)
        self.dropout_key = jax.random.fold_in(jax.random.key(config.seed), 1)
        self.train_step = state_lib.jit_train_step(
            self.model, self.optimizer, self.schedule, self.layout, self.mesh
        )
        batch_sharding = sharding.batch_sharding(self.mesh)
        self.teacher_forced = jax.jit(
            functools.partial(step_lib.teacher_forced_correct, model=self.model),
            in_shardings=(self.layout.param_sharding, batch_sharding),
            out_shardings=batch_sharding,
        )
        self.greedy = jax.jit(
            functools.partial(
                decoding.greedy_decode, self.model,
                max_new_tokens=config.eval.max_new_tokens, eos_id=tokenizer_lib.EOS_ID,
            ),
            in_shardings=(self.layout.param_sharding, batch_sharding, batch_sharding),
            out_shardings=batch_sharding,
        )

    def _check_positions_fit(self, longest: int) -> None:
        limit = positional.build(self.config.model.pe, self.config.model.num_heads).max_position()
        if limit is not None and longest - 1 > limit:
            raise config_schema.ConfigError(
                f"Evaluation needs positions up to {longest - 1} (longest test sequence plus "
                f"config.eval.max_new_tokens) but positional encoding {self.config.model.pe.name!r} "
                f"represents positions up to {limit}. Raise its max_length "
                f"(config.model.pe.{self.config.model.pe.name}) or shorten the test lengths."
            )

    def initial_state(self) -> dict:
        return state_lib.initial_state(
            self.model, self.optimizer, self.layout, self.train_seq_len,
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


def train(experiment: Experiment, checkpoints: checkpoint.Checkpoints) -> dict:
    """Trains from the newest checkpoint (or from scratch) to `config.train.num_steps`."""
    config = experiment.config
    train_cfg = config.train
    metrics_path = os.path.join(experiment.workdir, workdir_lib.METRICS_FILE)
    is_writer = jax.process_index() == 0

    # ---- Resume.
    start_step = checkpoints.latest_step() or 0
    if start_step:
        state = checkpoints.restore_latest(experiment.layout.restore_target())
        _log(f"Resumed from step {start_step} in {experiment.workdir}.")
    else:
        state = experiment.initial_state()
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

    # ---- Loop.
    window_start, window_steps = time.perf_counter(), 0
    for step in range(start_step, train_cfg.num_steps):
        batch = loader.to_global(batches.get(step), experiment.mesh)
        state, metrics = experiment.train_step(state, batch, experiment.dropout_key)
        done = step + 1
        window_steps += 1
        last = done == train_cfg.num_steps

        if done % train_cfg.log_every == 0 or last:
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if not np.isfinite(metrics["loss"]):
                checkpoints.wait()
                raise NonFiniteLossError(
                    f"Loss is {metrics['loss']} at step {done}. Last good checkpoint: step "
                    f"{checkpoints.latest_step()} in {experiment.workdir}/checkpoints."
                )
            elapsed = time.perf_counter() - window_start
            steps_per_second = window_steps / max(elapsed, 1e-9)
            eta = (train_cfg.num_steps - done) / max(steps_per_second, 1e-9)
            _log(
                f"step {done}/{train_cfg.num_steps}  loss {metrics['loss']:.4f}  "
                f"token_acc {metrics['token_accuracy']:.3f}  lr {metrics['learning_rate']:.2e}  "
                f"{steps_per_second:.2f} steps/s  ETA {eta / 60:.1f} min"
            )
            if is_writer:
                results.append_jsonl(
                    metrics_path,
                    dict(event="train", step=done, steps_per_second=steps_per_second, **metrics),
                )
            window_start, window_steps = time.perf_counter(), 0

        if done % train_cfg.eval_every == 0 or last:
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
            if is_writer:
                results.append_jsonl(
                    metrics_path,
                    dict(event="validation", step=done, exact_match=accuracy, best=best_metric),
                )
            window_start, window_steps = time.perf_counter(), 0

        if done % train_cfg.checkpoint_every == 0 or last:
            checkpoints.save(done, state)
    checkpoints.wait()
    return state


def evaluate(experiment: Experiment, checkpoints: checkpoint.Checkpoints) -> dict:
    """Scores validation and test with the best-validation checkpoint; writes the results files."""
    config = experiment.config
    best = checkpoints.best()
    if best is not None:
        step = best[0]
        state = checkpoints.restore_best(experiment.layout.restore_target())
    elif checkpoints.latest_step() is not None:
        step = checkpoints.latest_step()
        state = checkpoints.restore_latest(experiment.layout.restore_target())
    else:
        raise FileNotFoundError(
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
        pe=config.model.pe.name,
        seed=config.seed,
        metric=config.eval.metric,
    )
    if jax.process_index() == 0:
        workdir = experiment.workdir
        results.write_json_atomic(os.path.join(workdir, workdir_lib.RESULTS_FILE), payload)
        with open(os.path.join(workdir, workdir_lib.SAMPLES_FILE), "w") as handle:
            handle.writelines(results.json_line(sample) for sample in samples)
        results.plot_accuracy_vs_length(
            payload,
            os.path.join(workdir, workdir_lib.PLOT_FILE),
            title=f"{config.task.name}, {config.model.pe.name} (seed {config.seed}, step {step})",
        )
        print(results.format_table(payload), flush=True)
    return payload


def run(
    config: ml_collections.ConfigDict, workdir: str, mode: str = "train_and_evaluate",
    *, overwrite: bool = False,
) -> dict | None:
    """Validates `config`, then trains and/or evaluates it in `workdir`.

    Returns the results payload when the mode evaluates, else None.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}. Valid modes: {', '.join(MODES)}.")
    config_schema.validate(config, jax.device_count())
    if mode != "evaluate":
        workdir_lib.claim(workdir, config, overwrite=overwrite)
    experiment = Experiment(config, workdir)
    checkpoints = checkpoint.Checkpoints(workdir, keep=config.train.checkpoints_to_keep)
    try:
        if mode in ("train", "train_and_evaluate"):
            train(experiment, checkpoints)
        if mode in ("evaluate", "train_and_evaluate"):
            return evaluate(experiment, checkpoints)
        return None
    finally:
        checkpoints.wait()
        checkpoints.close()
