r"""The paper's base recipe (Kazemnejad et al. 2023; docs/paper.md).

A decoder-only stack of T5 blocks (12 layers, d_model 768, 12 heads, d_kv 64, d_ff 3072, ReLU,
pre-norm RMSNorm, no biases, dropout 0.1, tied embeddings, no 1/sqrt(d) logit scaling) trained with
AdamW (lr 3e-5, weight decay 0.05 on the parameters HF Trainer 4.16 decayed, 6% warmup, linear
decay to 1e-7, clip 1.0), batch 64, 40k steps, fp32; validation every 2,000 steps; the test
split is scored with the best-validation checkpoint.

Arguments (after the colon): task, pe, seed (the paper's seeds are 256788, 234054, 146317) and
smoke=true, which shrinks any experiment to a CPU run of a few seconds (big_vision's `runlocal`).

  python -m lenggen.main --config=configs/base.py:task=copy_repeat,pe=nope,seed=256788 \
      --workdir=runs/copy_repeat/nope/256788
"""

import ml_collections

from lenggen import config_args, config_schema

PAPER_SEEDS = (256788, 234054, 146317)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = config_args.parse(arg, task="copy_repeat", pe="nope", seed=PAPER_SEEDS[0], smoke=False)
    config = ml_collections.ConfigDict()
    config.seed = args["seed"]
    config.task = config_schema.task_section(args["task"])
    config.model = ml_collections.ConfigDict(
        dict(
            num_layers=12,
            d_model=768,
            num_heads=12,
            d_kv=64,
            d_ff=3072,
            dropout_rate=0.1,
            dtype="float32",
            # Matmul precision: 'highest' is full float32, as the paper trained. On a TPU,
            # 'default' runs float32 matmuls as one bfloat16 pass (~6x faster on the MXU) and
            # 'high' as three; lenggen.plan prices each.
            precision="highest",
            attention_impl="auto",
            pe=config_schema.pe_section(args["pe"]),
            # One nn.scan over the blocks (parameters stacked on a layer axis): the same model,
            # compiled once instead of 12 times (recommended on TPU; see the README). Off by
            # default, so checkpoints keep the per-block layout (decoder.stack_layers converts).
            scan_layers=False,
        )
    )
    config.train = ml_collections.ConfigDict(
        dict(
            batch_size=64,
            num_steps=40_000,
            learning_rate=3e-5,
            end_learning_rate=1e-7,
            warmup_fraction=0.06,
            weight_decay=0.05,
            # Which parameters decay: as HF Trainer 4.16 did in the official runs (norm scales
            # yes, T5's relative table no); "norms_and_biases" is the usual modern choice.
            weight_decay_mask="hf_trainer_4_16",
            adam_b1=0.9,
            adam_b2=0.999,
            adam_eps=1e-8,
            grad_clip_norm=1.0,
            log_every=100,
            eval_every=2_000,
            checkpoint_every=2_000,
            checkpoints_to_keep=2,
            # Per-device memory budget (bytes) for the up-front check that the train state fits;
            # 0 uses what the device reports (nothing on CPU, which reports none).
            max_bytes_per_device=0,
        )
    )
    config.eval = ml_collections.ConfigDict(
        dict(
            batch_size=64,
            # Greedy decoding budget, as the paper's (1,500 with a scratchpad).
            max_new_tokens=256,
            # "exact": the paper's metric (answer parsed from greedy output); teacher forcing
            # decides every example it proves correct, greedy KV-cache decoding the rest.
            # "teacher_forced": sequence exact match by teacher forcing only (fast; equal to
            # "exact" whenever the whole target is the answer, as in the copy family).
            metric="exact",
            # Greedy outputs of this many failed examples per split are kept in samples.jsonl.
            num_samples=20,
        )
    )
    # Mesh axes are (data, model); -1 takes the remaining devices.
    config.mesh = ml_collections.ConfigDict(dict(shape=(-1, 1)))
    # Where the TFDS datasets are prepared; empty means ~/.cache/lenggen/datasets.
    config.data = ml_collections.ConfigDict(dict(dir=""))
    # Metrics sinks besides stdout and metrics.jsonl: TensorBoard events in the workdir, and
    # W&B when a project is named (needs `pip install wandb`; mirrors the TensorBoard scalars).
    config.log = ml_collections.ConfigDict(dict(tensorboard=True, wandb_project=""))
    if args["smoke"]:
        config_schema.shrink_for_smoke_run(config)
    return config
