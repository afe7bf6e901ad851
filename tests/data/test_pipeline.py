"""The real `copy` and `addition` tasks, at small sizes, through tokenizer, builder and loader."""

import numpy as np
import pytest

from lenggen import tasks
from lenggen.data import dataset, loader
from lenggen.data.tokenizer import EOS_ID

SMALL = {
    "copy": dict(
        num_train=50,
        num_validation=10,
        num_test_per_length=2,
        max_train_length=5,
        max_test_length=8,
        num_symbols=10,
    ),
    "addition": dict(
        num_train=40,
        num_validation=8,
        num_test_per_digit_pair=1,
        max_train_digits=3,
        max_test_digits=5,
    ),
}


@pytest.fixture(scope="module", params=sorted(SMALL))
def case(request, tmp_path_factory):
    task = tasks.get(request.param, **SMALL[request.param])
    return task, dataset.prepare(task, tmp_path_factory.mktemp(request.param))


def test_records_are_the_task_examples_tokenized(case):
    task, prepared = case
    tokenizer = prepared.tokenizer
    assert tokenizer.words[2:] == task.vocabulary()
    for split in tasks.SPLITS:
        examples = list(task.examples(split))
        source = prepared.splits[split]
        assert len(source) == len(examples) > 0
        longest = 0
        for index, example in enumerate(examples):
            record = source[index]
            assert record["source"].decode() == example.source
            assert record["target"].decode() == example.target
            assert record["length"] == example.length
            tokens = record["tokens"].tolist()
            assert tokens[-1] == EOS_ID
            assert tokenizer.decode(tokens) == f"{example.source} {example.target}"
            assert len(tokens) == len(example.source.split()) + len(example.target.split()) + 1
            assert record["source_length"] == len(example.source.split())
            longest = max(longest, len(tokens))
        assert prepared.max_sequence_length(split) == longest


def test_one_training_epoch_sees_every_example_once(case):
    _, prepared = case
    source = prepared.splits["train"]
    seq_len = loader.round_up(prepared.max_sequence_length("train"), 8)
    batches = loader.TrainBatches(source, global_batch_size=10, seq_len=seq_len, seed=256788)
    epoch = [batches.get(step) for step in range(len(source) // 10)]
    assert sorted(np.concatenate([b["index"] for b in epoch]).tolist()) == list(range(len(source)))
    for batch in epoch:
        for row, index in enumerate(batch["index"]):
            record = source[int(index)]
            # The masked tokens are exactly the target and EOS.
            target = batch["tokens"][row][batch["loss_mask"][row] == 1]
            assert prepared.tokenizer.decode(target) == record["target"].decode()
            assert target[-1] == EOS_ID


def test_eval_prompts_are_the_sources(case):
    task, prepared = case
    source = prepared.splits["test"]
    seen = []
    for batch in loader.eval_batches(source, batch_size=4, pad_multiple=8):
        prompts = loader.prompt_batch(batch, pad_multiple=8)
        for row in np.flatnonzero(batch["example_mask"]):
            record = source[int(batch["index"][row])]
            prompt = prompts["prompt_tokens"][row][prompts["prompt_valid"][row]]
            assert prepared.tokenizer.decode(prompt) == record["source"].decode()
            seen.append(int(batch["index"][row]))
    assert sorted(seen) == list(range(len(source)))
    assert len(source) == len(list(task.examples("test")))
