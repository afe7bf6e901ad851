"""Aggregation over seeds and the paper's ranking of PEs, from `collect.RunResult`s.

A "cell" is `{"mean", "std", "n"}` over n seeds; std is the sample standard deviation (ddof=1,
as pandas and seaborn compute the paper's "mean ± 1 std over the 3 seeds"), None for one seed.
"""

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from lenggen.report.collect import RunResult
from lenggen.report.paper import PAPER_PE_ORDER, PAPER_TASK_ORDER

# Accuracies equal to this many decimals tie (k/n fractions computed by different sums).
_TIE_DECIMALS = 9


def cell(values: Sequence[float]) -> dict:
    """`{"mean", "std", "n"}` of `values` (std: ddof=1; None when there is one value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("cell() needs at least one value.")
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def ordered(names: Iterable[str], order: Sequence[str]) -> list[str]:
    """`names` (deduplicated) in `order` first, then the rest sorted."""
    names = set(names)
    return [n for n in order if n in names] + sorted(names - set(order))


def tasks_of(runs: Iterable[RunResult]) -> list[str]:
    return ordered((r.task for r in runs), PAPER_TASK_ORDER)


def pes_of(runs: Iterable[RunResult]) -> list[str]:
    return ordered((r.pe for r in runs), PAPER_PE_ORDER)


def overall_table(runs: Iterable[RunResult], split: str) -> dict[str, dict[str, dict]]:
    """`{task: {pe: cell}}` of split `split`'s "overall" exact match (the test split's is the
    paper's out-of-distribution micro-average). Runs without that split are left out."""
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for run in sorted(runs, key=lambda r: r.seed):
        if split in run.splits:
            values[run.task, run.pe].append(run.splits[split]["overall"])
    table: dict[str, dict[str, dict]] = defaultdict(dict)
    for (task, pe), accuracies in values.items():
        table[task][pe] = cell(accuracies)
    return dict(table)


def per_length(run: RunResult) -> dict[int, float]:
    """`{length: exact match}` over all of a run's splits: validation holds the training
    lengths, test the longer ones; a length in several splits is pooled, weighted by n."""
    correct: dict[int, float] = defaultdict(float)
    counts: dict[int, int] = defaultdict(int)
    for split in run.splits.values():
        for length, entry in split["by_length"].items():
            correct[int(length)] += entry["exact_match"] * entry["n"]
            counts[int(length)] += entry["n"]
    return {
        length: correct[length] / counts[length] for length in sorted(counts) if counts[length] > 0
    }


def by_length_table(runs: Iterable[RunResult]) -> dict[str, dict[str, dict[int, dict]]]:
    """`{task: {pe: {length: cell over seeds}}}`: the paper's per-length curves."""
    values: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for run in sorted(runs, key=lambda r: r.seed):
        for length, accuracy in per_length(run).items():
            values[run.task, run.pe, length].append(accuracy)
    table: dict[str, dict[str, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
    for (task, pe, length), accuracies in sorted(values.items()):
        table[task][pe][length] = cell(accuracies)
    return {task: dict(pes) for task, pes in table.items()}


def average_ranks(scores: Mapping[str, float]) -> dict[str, float]:
    """Rank 1 = highest score; tied names share the mean of the ranks they span.

    >>> average_ranks({"a": 0.9, "b": 0.5, "c": 0.5, "d": 0.1})
    {'a': 1.0, 'b': 2.5, 'c': 2.5, 'd': 4.0}
    """
    rounded = {name: round(score, _TIE_DECIMALS) for name, score in scores.items()}
    ordered_scores = sorted(rounded.values(), reverse=True)
    ranks = {}
    for name, score in rounded.items():
        first = ordered_scores.index(score) + 1
        last = first + ordered_scores.count(score) - 1
        ranks[name] = (first + last) / 2
    return ranks


def mean_reciprocal_rank(runs: Iterable[RunResult], pes: Sequence[str] | None = None) -> dict:
    """The paper's ranking metric: for each (task, seed), the PEs are ranked by overall test
    accuracy (ties: average rank), and each PE's reciprocal rank is averaged over them.

    Only (task, seed) groups holding a result for every PE in `pes` (default: every PE found)
    are ranked; the others are listed as incomplete.

    Returns:
      `{"mrr": {pe: float}, "groups": [[task, seed], ...], "incomplete": [[task, seed,
      [missing pes]], ...]}`; "mrr" is empty when no group is complete.
    """
    runs = list(runs)
    pes = list(pes) if pes is not None else pes_of(runs)
    accuracy: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for run in runs:
        accuracy[run.task, run.seed][run.pe] = run.splits["test"]["overall"]
    order = {task: i for i, task in enumerate(tasks_of(runs))}
    groups, incomplete = [], []
    reciprocal: dict[str, list[float]] = defaultdict(list)
    for task, seed in sorted(accuracy, key=lambda key: (order[key[0]], key[1])):
        scores = accuracy[task, seed]
        missing = [pe for pe in pes if pe not in scores]
        if missing:
            incomplete.append([task, seed, missing])
            continue
        groups.append([task, seed])
        for pe, rank in average_ranks({pe: scores[pe] for pe in pes}).items():
            reciprocal[pe].append(1.0 / rank)
    mrr = {pe: math.fsum(reciprocal[pe]) / len(groups) for pe in pes} if groups else {}
    return {"mrr": mrr, "groups": groups, "incomplete": incomplete}
