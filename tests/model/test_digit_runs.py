"""Tests of lenggen/model/digit_runs.py: hand-worked indices of "12+345=" in both digit orders,
continuation across calls, and the tokenizer's digit ids."""

import jax.numpy as jnp
import numpy as np

from lenggen.data.tokenizer import Tokenizer
from lenggen.model.digit_runs import digit_mask, digit_runs

# Ids: <pad> 0, </s> 1, "+" 2, "0".."9" 3..12, "=" 13.
TOKENIZER = Tokenizer(vocabulary=("+", *map(str, range(10)), "="))


def _ids(text: str) -> jnp.ndarray:
    return jnp.asarray([TOKENIZER.words.index(w) for w in text.split()], jnp.int32)[None]


def test_tokenizer_digit_ids():
    assert TOKENIZER.digit_ids == tuple(range(3, 13))
    # Multi-character words are no digits ("10", "s1"), whatever they contain.
    assert Tokenizer(vocabulary=("10", "7", "s1", "x")).digit_ids == (3,)


def test_most_significant_first_counts_from_the_left():
    # "1 2 + 3 4 5 =": the index is the place written, not the significance (2 is units).
    tokens = _ids("1 2 + 3 4 5 =")
    runs = digit_runs(tokens, tokens > 0, TOKENIZER.digit_ids)
    assert runs.tolist() == [[1, 2, 0, 1, 2, 3, 0]]


def test_least_significant_first_index_is_significance():
    # 12 + 345 = 357 reversed: "2 1 + 5 4 3 = 7 5 3"; units 2, 5, 7 all get 1, tens 1, 4, 5 get
    # 2, hundreds 3 and 3 get 3.
    tokens = _ids("2 1 + 5 4 3 = 7 5 3")
    runs = digit_runs(tokens, tokens > 0, TOKENIZER.digit_ids)
    assert runs.tolist() == [[1, 2, 0, 1, 2, 3, 0, 1, 2, 3]]


def test_pads_are_no_digits_and_reset():
    tokens = jnp.asarray([[0, 0, 4, 5, 2, 6], [4, 0, 5, 5, 5, 13]], jnp.int32)
    valid = jnp.asarray([[0, 0, 1, 1, 1, 1], [1, 0, 1, 1, 1, 1]], bool)
    # Row 1's pad (id 0, and invalid) between digits splits them into two numbers.
    assert digit_runs(tokens, valid, TOKENIZER.digit_ids).tolist() == [
        [0, 0, 1, 2, 0, 1],
        [1, 0, 1, 2, 3, 0],
    ]
    # A valid token whose id is a digit id counts; an invalid one never does.
    assert digit_mask(tokens, valid & (tokens != 5), (5,)).tolist() == [[False] * 6, [False] * 6]


def test_no_digit_ids_gives_zeros():
    tokens = _ids("1 2 + 3")
    assert digit_runs(tokens, tokens > 0, ()).tolist() == [[0, 0, 0, 0]]


def test_previous_continues_the_run():
    tokens = _ids("4 5 + 6")
    previous = jnp.asarray([3], jnp.int32)
    assert digit_runs(tokens, tokens > 0, TOKENIZER.digit_ids, previous).tolist() == [[4, 5, 0, 1]]


def test_chunks_equal_the_whole_sequence():
    """Invariant: any split into calls, each continuing the last, gives the whole's indices."""
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, 14, (4, 23)), jnp.int32)
    valid = jnp.asarray(rng.random((4, 23)) > 0.1)
    whole = digit_runs(tokens, valid, TOKENIZER.digit_ids)
    for cuts in ((1,) * 23, (5, 7, 1, 10), (23,), (2, 2, 19)):
        previous, pieces, start = jnp.zeros((4,), jnp.int32), [], 0
        for length in cuts:
            piece = digit_runs(
                tokens[:, start : start + length],
                valid[:, start : start + length],
                TOKENIZER.digit_ids,
                previous,
            )
            previous, start = piece[:, -1], start + length
            pieces.append(piece)
        np.testing.assert_array_equal(jnp.concatenate(pieces, axis=1), whole)
    # And the runs are long enough to matter: some reach 4 or more.
    assert int(whole.max()) >= 4
