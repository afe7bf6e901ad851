r"""Quickstart: a tiny NoPE decoder learns to copy, then is tested on longer inputs (CPU, minutes).

The paper's base recipe (configs/base.py) shrunk to run on a 2-core laptop CPU in about three
minutes: a 2-layer, 128-wide decoder, the `copy` task with 16 symbols, trained on lengths 2-8 and
tested on 9-14, with a learning rate suited to so small a model and so few steps (4,000).

  launch/local.sh                   # sets up .venv, then runs this config
  python -m lenggen.main --config=configs/quickstart.py --workdir=runs/quickstart

launch/local.sh runs it with XLA's fastest CPU setting measured here (one device, oneDNN
matmuls; benchmarks/results/cpu_flags_quickstart.md). To get the same when calling lenggen.main
yourself: XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_onednn=true
--xla_cpu_experimental_onednn_custom_call=true". An installed lenggen finds this file by the
same --config from any directory (lenggen/config_files.py).

Arguments: pe (default nope), seed. E.g. --config=configs/quickstart.py:pe=alibi.
"""

import os

import ml_collections

from lenggen import config_args


def _load_base():
    """configs/base.py, found next to this file (config files are loaded by path, not package)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "base.py")
    return config_args.load_file(path, "lenggen_configs_base")


base = _load_base()
# The decoder's size (also the CPU-scale grid's, configs/grids/cpu_mini.py, and the training
# benchmark's "quickstart" size).
MODEL = dict(num_layers=2, d_model=128, num_heads=4, d_kv=32, d_ff=512)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = config_args.parse(arg, pe="nope", seed=base.PAPER_SEEDS[0])
    config = base.get_config(f"task=copy,pe={args['pe']},seed={args['seed']}")
    config.task.options.update(
        num_symbols=16,
        max_train_length=8,
        max_test_length=14,
        num_train=20_000,
        num_validation=320,
        num_test_per_length=64,
    )
    config.model.update(**MODEL, dropout_rate=0.0)
    config.train.update(
        batch_size=64,
        num_steps=4_000,
        learning_rate=1e-3,
        end_learning_rate=1e-5,
        log_every=250,
        eval_every=1_000,
        checkpoint_every=1_000,
    )
    config.eval.update(batch_size=64, max_new_tokens=40)
    return config
