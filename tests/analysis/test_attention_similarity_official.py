"""The official variant of the attention similarity (the official code's analyzer): its "JSD"
with the mixture first, head pairs i < j only, validation and test lengths together; checked
against loops written from the official formula, and next to the standard variant."""

import itertools
import math

import numpy as np
import pytest

from configs import base
from lenggen.analysis import attention_similarity, divergence
from lenggen.analysis import runs as runs_lib
from tests.analysis import test_attention_similarity as similarity_tests


def _kl(p, q) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def _official_jsd(p, q) -> float:
    """torch: 0.5 * (KLDivLoss(p.log(), m) + KLDivLoss(q.log(), m)), KLDivLoss(x, t) =
    sum t * (log t - x): so KL(m || p) and KL(m || q)."""
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    return 0.5 * (_kl(m, p) + _kl(m, q))


def test_official_jsd_puts_the_mixture_first():
    p, q = np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.3, 0.6])
    ours = float(divergence.official_jsd(p, q))
    assert ours == pytest.approx(_official_jsd(p, q), rel=1e-5)
    m = (p + q) / 2
    standard = 0.5 * (_kl(p, m) + _kl(q, m))
    assert float(divergence.jensen_shannon(p, q)) == pytest.approx(standard, rel=1e-5)
    assert abs(ours - standard) > 1e-3  # a different number on the same pair
    assert float(divergence.official_jsd(p, p)) == 0.0


def test_official_layer_distance_takes_pairs_i_less_than_j_only():
    rng = np.random.default_rng(0)
    heads, n = 3, 5
    logits = rng.normal(size=(2, heads, n, n)) * 2
    causal = np.tril(np.ones((n, n), bool))
    probs = np.where(causal, np.exp(logits), 0.0)
    probs /= probs.sum(-1, keepdims=True)
    reference, other = probs[0], probs[1].copy()
    other[0] = reference[0]  # a same-index pair at distance 0, which the official code skips
    valid = np.ones(n, bool)
    expected = math.inf
    # The official loop: src = the compared run's head i, tgt = NoPE's head j, i < j; per
    # query row t, the distribution over keys :t+1; mean over rows.
    for i, j in itertools.combinations(range(heads), 2):
        rows = [_official_jsd(reference[j, t, : t + 1], other[i, t, : t + 1]) for t in range(n)]
        expected = min(expected, float(np.mean(rows)))
    got = float(divergence.official_layer_distance(reference, other, valid, "jsd"))
    assert got == pytest.approx(expected, rel=1e-4)
    assert float(divergence.layer_distance(reference, other, valid, "jsd")) == pytest.approx(
        0.0, abs=1e-6
    )  # the standard variant finds the identical pair
    with pytest.raises(ValueError, match="same number"):
        divergence.official_layer_distance(reference, other[:2], valid, "jsd")


def _workdir(path: str, pe: str, seed: int) -> str:
    config = base.get_config(f"task=copy,pe={pe},seed={seed},smoke=true")
    config.task.options.update(max_test_length=22, num_test_per_length=2)
    return similarity_tests._make_workdir(path, config)


def test_both_variants_side_by_side_on_real_runs(tmp_path):
    nope = runs_lib.load(_workdir(str(tmp_path / "nope"), "nope", 1))
    t5 = runs_lib.load(_workdir(str(tmp_path / "t5"), "t5", 1))
    payload = attention_similarity.compare(
        nope, [nope, t5], examples_per_length=1, batch_size=8, variant="both"
    )
    assert payload["metrics"] == ["jsd", "symmetric_kl", "official_jsd", "official_symmetric_kl"]
    validation = runs_lib.examples_per_length(nope.task, nope.tokenizer, "validation", 1)
    test = runs_lib.examples_per_length(nope.task, nope.tokenizer, "test", 1)
    assert payload["num_examples"] == len(test) == 2
    assert payload["official_num_examples"] == len(validation) + len(test)
    itself, other = payload["comparisons"]
    # Against itself: the standard variant pairs head h with head h (0); the official one
    # never does, so it measures how different the run's own heads are (> 0).
    assert itself["jsd"]["overall"] == 0.0 and itself["official_jsd"]["overall"] > 0
    lengths = sorted(int(k) for k in other["official_jsd"]["by_length"])
    assert lengths == sorted({int(r["length"]) for r in validation + test})
    # One test length, recomputed from plain forward passes with the official loops.
    record = [r for r in test if r["length"] == 22][0]
    batch = next(runs_lib.batches([record], batch_size=1))
    n = len(record["tokens"])
    ours = np.asarray(runs_lib.attention(nope, batch), np.float64)[:, 0, :, :n, :n]
    theirs = np.asarray(runs_lib.attention(t5, batch), np.float64)[:, 0, :, :n, :n]
    per_layer = []
    for layer in range(2):
        heads = ours.shape[1]
        per_layer.append(
            min(
                np.mean(
                    [
                        _official_jsd(
                            ours[layer, j, row, : row + 1], theirs[layer, i, row, : row + 1]
                        )
                        for row in range(n)
                    ]
                )
                for i, j in itertools.combinations(range(heads), 2)
            )
        )
    assert other["official_jsd"]["by_length"]["22"] == pytest.approx(np.mean(per_layer), rel=1e-4)
    with pytest.raises(ValueError, match="variant='paper': expected one of standard"):
        attention_similarity.compare(nope, [t5], variant="paper")
