r"""A copy task and a 2-layer decoder that train in seconds: the run the fault tests interrupt.

The pattern of tests/train/test_loop.py's `_tiny_config`, as a config file so that the same
experiment runs in-process and as a user runs it:

  python -m lenggen.main --config=tests/reliability/tiny_config.py:steps=40 --workdir=DIR \
      --config.data.dir=DATA

Dropout stays on, so a resumed run must also replay each step's dropout randomness.
"""

import ml_collections

from configs import base
from lenggen import config_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = config_args.parse(arg, steps=24)
    config = base.get_config("task=copy,pe=nope,seed=3")
    config.task.options.update(
        num_symbols=8,
        min_length=2,
        max_train_length=6,
        max_test_length=8,
        num_train=512,
        num_validation=32,
        num_test_per_length=8,
    )
    config.model.update(num_layers=2, d_model=32, num_heads=2, d_kv=16, d_ff=64, dropout_rate=0.1)
    steps = args["steps"]
    config.train.update(
        batch_size=8,
        num_steps=steps,
        learning_rate=3e-3,
        end_learning_rate=1e-4,
        log_every=1,
        eval_every=max(steps // 2, 1),
        checkpoint_every=4,
        checkpoints_to_keep=2,
    )
    config.eval.update(batch_size=16, max_new_tokens=8, metric="teacher_forced", num_samples=3)
    config.mesh.shape = (2, 2)  # data x model over the 4 fake devices of tests/conftest.py
    return config
