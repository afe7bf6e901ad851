"""Tests of lenggen/tasks/pcfg.py with source="real" (the default) and of pcfg_data.py.

The shipped files are read here a second way (gzip from their paths, checksums recomputed), and
the number of functions is counted from a function list written out again, so the split checks
do not reuse the code they test.
"""

import collections
import gzip
import hashlib
import importlib.util
import pathlib
import re

import pytest

import lenggen
from lenggen import tasks
from lenggen.tasks import TaskOptionError, pcfg, pcfg_data, pcfg_grammar

DATA = pathlib.Path(lenggen.__file__).parent / "tasks" / "data" / "pcfgset"
FUNCTIONS = {
    "copy",
    "reverse",
    "shift",
    "echo",
    "swap_first_last",
    "repeat",
    "append",
    "prepend",
    "remove_first",
    "remove_second",
}
UNARY = {"copy", "reverse", "shift", "echo", "swap_first_last", "repeat"}
# Counted with a separate script from the upstream files: pairs with n = 1..8 functions in the
# pooled basic-corpus dev (4,860 pairs) and test (9,721 pairs) files.
POOL_COUNTS = {1: 225, 2: 1870, 3: 2827, 4: 2745, 5: 1931, 6: 1495, 7: 967, 8: 740}


def read_pairs(name):
    def lines(suffix):
        return gzip.decompress((DATA / f"{name}{suffix}.gz").read_bytes()).decode().splitlines()

    sources, targets = lines(".src"), lines(".tgt")
    assert len(sources) == len(targets)
    return list(zip(sources, targets))


def functions(source):
    return sum(word in FUNCTIONS for word in source.split())


@pytest.fixture(scope="module")
def real_test():
    return read_pairs("productivity/test")


@pytest.fixture(scope="module")
def pool():
    pairs = read_pairs("pcfgset/dev") + read_pairs("pcfgset/test")
    return [pair for pair in pairs if functions(pair[0]) <= 8]


@pytest.fixture(scope="module")
def default_splits():
    task = tasks.get("pcfg")
    return task, {split: list(task.examples(split)) for split in tasks.SPLITS}


def test_shipped_files_match_the_pinned_checksums():
    for name, (lines, source_sha, target_sha) in pcfg_data.FILES.items():
        for suffix, sha in ((".src", source_sha), (".tgt", target_sha)):
            data = gzip.decompress((DATA / f"{name}{suffix}.gz").read_bytes())
            assert hashlib.sha256(data).hexdigest() == sha
            assert data.count(b"\n") == lines and data.endswith(b"\n")
    assert "MIT License" in (DATA / "LICENSE").read_text()
    assert pcfg_data.COMMIT in (DATA / "README.md").read_text()


def test_evaluate_reproduces_every_real_target():
    for name in pcfg_data.FILES:
        pairs = pcfg_data.read(name)
        mismatches = [(s, t) for s, t in pairs if " ".join(pcfg_grammar.evaluate(s.split())) != t]
        assert not mismatches, (name, len(mismatches), mismatches[:3])
    assert len(pcfg_data.read("productivity/test")) == 11_333


def test_the_test_split_is_the_real_file(default_splits, real_test):
    task, splits = default_splits
    assert [(e.source, e.target, e.length) for e in splits["test"]] == [
        (f"Solve: {source} [SEP]", target, functions(source)) for source, target in real_test
    ]
    counts = collections.Counter(e.length for e in splits["test"])
    # The real set's counts per number of functions, far from even.
    assert (counts[9], counts[10], counts[11], counts[35], counts[31]) == (3232, 2296, 1738, 1, 0)
    assert sum(counts.values()) == 11_333
    assert task.lengths("test") == tuple(sorted(counts))


def test_pool_counts(pool):
    assert collections.Counter(functions(s) for s, _ in pool) == POOL_COUNTS
    assert len(pool) == 12_800 == len({s for s, _ in pool})


def test_train_and_validation_follow_the_real_proportions(default_splits, pool):
    task, splits = default_splits
    for split, total in (("train", 72_909), ("validation", 4_050)):
        counts = collections.Counter(e.length for e in splits[split])
        assert sum(counts.values()) == total
        for n, real in POOL_COUNTS.items():
            # Largest remainders: each count is the floor or the ceiling of its exact share.
            assert abs(counts[n] - total * real / 12_800) < 1, (split, n, counts[n])
        assert task.lengths(split) == tuple(range(1, 9))
    # Hand-worked: 72,909 * 225 / 12,800 = 1281.6 -> 1,282; 4,050 * 740 / 12,800 = 234.1 -> 234.
    assert collections.Counter(e.length for e in splits["train"])[1] == 1_282
    assert collections.Counter(e.length for e in splits["validation"])[8] == 234


def test_every_real_pair_is_used_once_and_no_test_source_leaks(default_splits, pool, real_test):
    _, splits = default_splits
    train = [(e.source, e.target) for e in splits["train"]]
    validation = [(e.source, e.target) for e in splits["validation"]]
    sources = [s for s, _ in train + validation]
    assert len(sources) == len(set(sources)) == 76_959  # distinct, so train and validation apart
    real = {(f"Solve: {s} [SEP]", t) for s, t in pool}
    assert real <= set(train) | set(validation)
    test_sources = {f"Solve: {s} [SEP]" for s, _ in real_test}
    assert not test_sources & set(sources)
    # Validation holds real pairs in about the share the whole takes (12,800 / 76,959 = 16.6%).
    share = sum(pair in real for pair in validation) / len(validation)
    assert 0.14 < share < 0.19, share


def test_generated_top_ups_follow_the_pool(default_splits, pool):
    _, splits = default_splits
    real = {f"Solve: {s} [SEP]" for s, _ in pool}
    generated = [e for e in splits["train"] + splits["validation"] if e.source not in real]
    assert len(generated) == 72_909 + 4_050 - 12_800

    def statistics(sources):
        words = [w for s in sources for w in s.split() if w in FUNCTIONS]
        runs = [
            len(r.split())
            for s in sources
            for r in re.split(r"\b(?:" + "|".join(FUNCTIONS) + r")\b|,", s)
            if r.split()
        ]
        return (
            sum(w in UNARY for w in words) / len(words),
            [runs.count(k) / len(runs) for k in range(2, 6)],
        )

    for n in (2, 5, 8):
        real_unary, _ = statistics([s for s, _ in pool if functions(s) == n])
        top_up_unary, _ = statistics([e.source for e in generated if e.length == n])
        assert abs(top_up_unary - real_unary) < 0.015, (n, top_up_unary, real_unary)
    _, real_lengths = statistics([s for s, _ in pool])
    _, top_up_lengths = statistics(
        [e.source.removeprefix("Solve: ").removesuffix(" [SEP]") for e in generated]
    )
    assert max(abs(a - b) for a, b in zip(real_lengths, top_up_lengths)) < 0.01
    for example in generated[:5_000]:
        assert example.target == " ".join(pcfg_grammar.evaluate(example.source.split()[1:-1]))
        assert len(example.target.split()) <= 256


def test_paper_grid_test_lengths_are_the_real_test_sets(default_splits):
    # configs/grids/paper.py sizes randomized positions from the longest test prompt and target.
    _, splits = default_splits
    spec = importlib.util.spec_from_file_location("grid", "configs/grids/paper.py")
    paper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(paper)
    assert (
        paper.TEST_LENGTHS["pcfg"]
        == (
            max(len(e.source.split()) for e in splits["test"]),
            max(len(e.target.split()) + 1 for e in splits["test"]),  # EOS
        )
        == (73, 737)
    )


def test_vocabulary_covers_the_real_files():
    words = {
        w for name in pcfg_data.FILES for s, t in pcfg_data.read(name) for w in f"{s} {t}".split()
    }
    vocabulary = set(tasks.get("pcfg").vocabulary())
    assert words <= vocabulary
    assert vocabulary - words == {"Solve:", "[SEP]"}


def test_small_sizes_use_real_pairs_only_and_a_test_subset(pool, real_test):
    task = tasks.get("pcfg", num_train=100, num_validation=20, num_test=50)
    real = {(f"Solve: {s} [SEP]", t) for s, t in pool}
    for split, size in (("train", 100), ("validation", 20)):
        examples = list(task.examples(split))
        assert len(examples) == size and {(e.source, e.target) for e in examples} <= real
    test = [(e.source, e.target) for e in task.examples("test")]
    file = [(f"Solve: {s} [SEP]", t) for s, t in real_test]
    positions = [file.index(pair) for pair in test]
    assert len(test) == 50 and positions == sorted(set(positions))  # file order, no repeats
    fewer = tasks.get(
        "pcfg", num_train=100, num_validation=20, num_test=8_441, max_test_functions=12
    )
    counts = collections.Counter(e.length for e in fewer.examples("test"))
    assert counts == {9: 3232, 10: 2296, 11: 1738, 12: 1175}


@pytest.mark.parametrize(
    "total, weights, expected",
    [
        (10, [1, 1, 1], [4, 3, 3]),  # 3.33 each: the one left over goes to the first
        (7, [2, 1], [5, 2]),  # 4.67 and 2.33: floors 4 + 2, the larger remainder (.67) gets the 7th
        (0, [5, 3], [0, 0]),
    ],
)
def test_proportional_counts(total, weights, expected):
    assert pcfg.proportional_counts(total, weights) == expected


def test_min_functions_keeps_the_real_proportions_of_the_rest():
    task = tasks.get("pcfg", min_functions=3, num_train=1_000, num_validation=100, num_test=10)
    counts = collections.Counter(e.length for e in task.examples("train"))
    rest = sum(POOL_COUNTS[n] for n in range(3, 9))
    assert set(counts) == set(range(3, 9)) and sum(counts.values()) == 1_000
    assert all(abs(counts[n] - 1_000 * POOL_COUNTS[n] / rest) < 1 for n in range(3, 9))


def test_determinism():
    small = dict(num_train=1_000, num_validation=100, num_test=30)
    first = {split: list(tasks.get("pcfg", **small).examples(split)) for split in tasks.SPLITS}
    again = {split: list(tasks.get("pcfg", **small).examples(split)) for split in tasks.SPLITS}
    other = {
        split: list(tasks.get("pcfg", seed=1, **small).examples(split)) for split in tasks.SPLITS
    }
    assert first == again
    assert all(first[split] != other[split] for split in tasks.SPLITS)


def test_output_is_pinned(default_splits):
    # A regression guard, not a derivation: stored datasets are only valid while the task's
    # output stays the same. If this fails, bump Pcfg.version, then update.
    _, splits = default_splits
    assert splits["train"][0].source == (
        "Solve: remove_second U14 W2 R4 I17 D13 , append K19 D14 K8 G2 V3 , O15 D12 [SEP]"
    )
    assert splits["test"][0].source == (
        "Solve: append X6 Z11 T16 H9 , reverse remove_second Q13 Y2 C11 , repeat repeat prepend "
        "append L8 P13 X1 , D8 U1 V18 , remove_second V10 J5 I8 , copy I10 K18 J18 C4 [SEP]"
    )


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"source": "file"},
            "Task 'pcfg': option source='file' is not a data source; expected one of real, "
            "generated.",
        ),
        (
            {"max_train_functions": 6},
            "Task 'pcfg': option max_train_functions=6 cannot be used with source='real', whose "
            "split cuts at 8 functions; expected 8, or source='generated'.",
        ),
        (
            {"num_test": 11_334},
            "Task 'pcfg': option num_test=11334 is too large; expected an int <= 11333 (the real "
            "test pairs with at most max_test_functions=35 functions).",
        ),
        (
            {"max_test_functions": 10, "num_test": 6_000},
            "option num_test=6000 is too large; expected an int <= 5528",
        ),
    ],
)
def test_bad_values(options, message):
    with pytest.raises(TaskOptionError, match=re.escape(message)):
        tasks.get("pcfg", **options)


def test_damaged_or_missing_files(monkeypatch):
    lines, source_sha, target_sha = pcfg_data.FILES["pcfgset/dev"]
    monkeypatch.setitem(pcfg_data.FILES, "pcfgset/dev", (lines, "0" * 64, target_sha))
    monkeypatch.setitem(pcfg_data.FILES, "pcfgset/nothing", (1, "0" * 64, "0" * 64))
    pcfg_data.read.cache_clear()
    try:
        with pytest.raises(
            pcfg_data.PcfgDataError,
            match=re.escape(f"has sha256 {source_sha}; expected {'0' * 64}"),
        ):
            pcfg_data.read("pcfgset/dev")
        with pytest.raises(
            pcfg_data.PcfgDataError,
            match=re.escape(
                "The PCFG SET file pcfgset/nothing.src.gz is missing from the lenggen package"
            ),
        ):
            pcfg_data.read("pcfgset/nothing")
    finally:
        pcfg_data.read.cache_clear()  # Later tests read the real entries again.
    with pytest.raises(ValueError, match="Unknown PCFG SET file 'x'; expected one of "):
        pcfg_data.read("x")
