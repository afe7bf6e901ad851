"""Every registered task trains and evaluates end to end at tiny size (the smoke switch)."""

import json
import os

import pytest

from configs import base
from lenggen import tasks
from lenggen.train import loop


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("datasets"))


@pytest.mark.parametrize("task", tasks.names())
def test_task_trains_and_evaluates(task, tmp_path, data_dir):
    config = base.get_config(f"task={task},pe=nope,smoke=true")
    config.train.update(num_steps=2, log_every=1, eval_every=2, checkpoint_every=2)
    config.eval.update(batch_size=64, max_new_tokens=4)
    config.data.dir = data_dir
    payload = loop.run(config, str(tmp_path))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(payload)) and saved["step"] == 2
    task_object = tasks.get(task, **config.task.options.to_dict())
    for split in ("validation", "test"):
        by_length = saved["splits"][split]["by_length"]
        assert sorted(int(k) for k in by_length) == list(task_object.lengths(split)), split
        assert sum(entry["n"] for entry in by_length.values()) == sum(
            1 for _ in task_object.examples(split)
        )
    assert os.path.exists(tmp_path / "accuracy_vs_length.png")
