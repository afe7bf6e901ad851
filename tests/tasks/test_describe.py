from lenggen import tasks
from lenggen.tasks import describe


def test_describe_lists_sizes_lengths_and_examples():
    task = tasks.get(
        "reverse",
        num_train=30,
        num_validation=10,
        num_test_per_length=2,
        max_train_length=6,
        max_test_length=8,
    )
    text = describe.describe(task, num_examples=2)
    lines = text.splitlines()
    assert lines[0].startswith("== reverse")
    assert lines[1].split() == ["train", "30", "examples,", "lengths", "2-6", "(5", "buckets)"]
    assert lines[7].split() == ["test", "4", "examples,", "lengths", "7-8", "(2", "buckets)"]
    first_test = next(iter(task.examples("test")))
    assert f"[{first_test.length}] {first_test.source}  =>  {first_test.target}" == lines[8].strip()
    assert len(lines) == 1 + 3 * (1 + 2)


def test_options_apply_to_the_listed_tasks():
    text = describe.describe_all(["addition"], 1, "scratchpad=full,num_train=5")
    assert "'scratchpad': 'full'" in text
    assert text.splitlines()[1].split()[:3] == ["train", "5", "examples,"]
    assert "Thinking step by step" in text
