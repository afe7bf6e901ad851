"""Tests of lenggen/model/positional/coupling.py: coupled ids of "12+345=357" (hand-worked),
the learned and sinusoidal tables, the training start offset and option errors. KV-cache
decoding: tests/model/test_abacus.py (test_cached_decoding_continues_digit_runs) and the all-PE
tests (tests/model/test_decoding.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lenggen.model import positional
from lenggen.model.positional.absolute import sinusoidal_embedding
from lenggen.model.positional.coupling import PositionCoupling
from tests.model import tiny

D_MODEL = 4
# 12 + 345 = 357 least-significant digit first, "2 1 + 5 4 3 = 7 5 3": digit runs.
RUNS = jnp.asarray([[1, 2, 0, 1, 2, 3, 0, 1, 2, 3]], jnp.int32)


def _pe(**options):
    return PositionCoupling(num_heads=3, **{"max_position_id": 9, "offset_max": 0, **options})


def test_equal_significance_shares_an_id():
    ids = _pe().coupled_ids(RUNS)
    # units 2, 5, 7 -> 1; tens 1, 4, 5 -> 2; hundreds 3, 3 -> 3; "+" and "=" -> 0.
    assert ids.tolist() == [[1, 2, 0, 1, 2, 3, 0, 1, 2, 3]]


def test_learned_table_rows():
    table = 10.0 * np.arange(10)[:, None] + np.arange(D_MODEL)[None, :]  # row k: 10k + c
    x = jnp.ones(RUNS.shape + (D_MODEL,))
    out = _pe().apply({"params": {"embedding": table}}, x, RUNS, method=PositionCoupling.embed)
    assert out[0, :, 0].tolist() == [11, 21, 1, 11, 21, 31, 1, 11, 21, 31]
    # An id past max_position_id reads NaN.
    out = _pe().apply(
        {"params": {"embedding": table}}, x[:, :2], RUNS[:, :2] + 8, method=PositionCoupling.embed
    )
    assert out[0, 0, 0] == 91 and bool(jnp.all(jnp.isnan(out[0, 1])))


def test_sinusoidal_code():
    pe = _pe(kind="sinusoidal")
    x = jnp.zeros(RUNS.shape + (D_MODEL,))
    out = pe.apply({}, x, RUNS, method=PositionCoupling.embed)
    # Id 0 is [sin 0, sin 0, cos 0, cos 0]; id 2's first entry is sin(2).
    np.testing.assert_allclose(out[0, 2], [0, 0, 1, 1], atol=1e-7)
    np.testing.assert_allclose(out[0, 1, 0], np.sin(2.0), rtol=1e-6)
    np.testing.assert_allclose(out, sinusoidal_embedding(RUNS, D_MODEL), rtol=1e-6)


def test_training_start_offset():
    runs = jnp.tile(RUNS, (64, 1))
    ids = _pe(offset_max=3).apply(
        {}, runs, method=PositionCoupling.coupled_ids, rngs={"dropout": jax.random.key(0)}
    )
    starts = ids[:, 0] - 1
    np.testing.assert_array_equal(ids, jnp.where(runs > 0, runs + starts[:, None], 0))
    assert sorted(set(starts.tolist())) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(kind="rope"), "coupling kind must be one of"),
        (
            dict(max_position_id=5, offset_max=5),
            r"coupling offset_max must be in \[0, max_position_id - 1\] = \[0, 4\], got 5",
        ),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        positional.build(tiny.pe_config("coupling", **options), num_heads=3)
