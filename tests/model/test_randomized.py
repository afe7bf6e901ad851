"""Tests of lenggen/model/positional/randomized.py and its use by the train and eval steps.

Sampling: sorted, distinct, in range, deterministic per key, uniform; hand-worked cases where
the subset is forced (M = n). Steps: with every PE, a train step sees exactly
`sample_positions(fold_in(step key, POSITIONS_STREAM), valid, M)`; NoPE's loss is unchanged
(its attention sees only the order of positions). Losses compared at float32 1e-6.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from lenggen.data import loader
from lenggen.evaluate import steps as eval_steps
from lenggen.model import decoding, positional
from lenggen.model.decoder import Decoder
from lenggen.model.positional import randomized
from lenggen.train import step as step_lib
from tests.model import tiny

# Right-padded rows holding 9, 6 and 1 valid tokens, then a left-padded row of 5.
VALID = np.array([[1] * 9, [1] * 6 + [0] * 3, [1] + [0] * 8, [0] * 4 + [1] * 5], bool)


_SAMPLE = jax.jit(randomized.sample_positions, static_argnames="max_position")


def _sample(seed, valid=VALID, max_position=50):
    return np.asarray(_SAMPLE(jax.random.key(seed), jnp.asarray(valid), max_position=max_position))


def test_sorted_distinct_in_range_on_valid_tokens():
    for seed in range(5):
        positions = _sample(seed)
        assert positions.shape == VALID.shape and positions.dtype == np.int32
        assert positions.min() >= 0 and positions.max() < 50
        for row, valid in zip(positions, VALID, strict=True):
            real = row[valid]
            assert (np.diff(real) > 0).all()  # sorted and distinct
            # Pads repeat the nearest valid position before them (the first's when leading).
            first, last = np.flatnonzero(valid)[[0, -1]]
            assert (row[:first] == row[first]).all() and (row[last:] == row[last]).all()


def test_max_position_equal_to_the_count_gives_0_to_n_minus_1():
    # The only 9-subset of [0, 9) is all of it; a row of 6 valid tokens with M = 6 likewise.
    full = _sample(3, VALID[:1], max_position=9)
    assert full.tolist() == [list(range(9))]
    six = _sample(4, VALID[1:2], max_position=6)
    assert six.tolist() == [[0, 1, 2, 3, 4, 5, 5, 5, 5]]


def test_deterministic_per_key_and_different_keys_differ():
    np.testing.assert_array_equal(_sample(7), _sample(7))
    assert (_sample(7) != _sample(8)).any()
    # A single key equals its per-example split.
    keys = jax.random.split(jax.random.key(7), len(VALID))
    per_row = _SAMPLE(keys, jnp.asarray(VALID), max_position=50)
    np.testing.assert_array_equal(per_row, _sample(7))


def test_subsets_are_uniform():
    # Rows of 2 valid tokens with M = 4: each of the 6 subsets {a < b} has probability 1/6.
    valid = jnp.ones((6000, 2), bool)
    positions = np.asarray(_SAMPLE(jax.random.key(0), valid, max_position=4))
    codes = positions[:, 0] * 4 + positions[:, 1]
    counts = {code: int((codes == code).sum()) for code in np.unique(codes)}
    expected = {a * 4 + b for a in range(4) for b in range(a + 1, 4)}
    assert set(counts) == expected
    # Binomial(6000, 1/6): mean 1000, std 28.9; 5 std is far beyond chance.
    assert all(abs(count - 1000) < 5 * 28.9 for count in counts.values()), counts


def test_example_keys_depend_only_on_the_valid_tokens():
    real = np.array([5, 3, 9, 2])
    right = np.array([[*real, 0, 0], [4, 4, 4, 4, 4, 4]])
    left = np.array([[7, 4, 4, 4, 4, 4], [1, 1, *real]])  # the same example, left-padded
    valid_right = np.array([[1, 1, 1, 1, 0, 0], [1] * 6], bool)
    valid_left = np.array([[1] * 6, [0, 0, 1, 1, 1, 1]], bool)
    key = jax.random.key(0)
    a = randomized.example_keys(key, jnp.asarray(right), jnp.asarray(valid_right))
    b = randomized.example_keys(key, jnp.asarray(left), jnp.asarray(valid_left))
    data = jax.random.key_data
    np.testing.assert_array_equal(data(a[0]), data(b[1]))
    assert (data(a[0]) != data(a[1])).any() and (data(b[0]) != data(a[1])).any()
    # Order matters: a permuted example gets another key.
    c = randomized.example_keys(key, jnp.asarray([real[::-1]]), jnp.ones((1, 4), bool))
    assert (data(c[0]) != data(a[0])).any()


def _prompt_valid(valid, source_length):
    return valid & (np.arange(valid.shape[1])[None, :] < np.asarray(source_length)[:, None])


_TABLE = jax.jit(randomized.decoding_table, static_argnames=("max_position", "max_new_tokens"))


def test_decoding_table_hand_worked_when_the_draw_is_forced():
    # Prompts of 3 and 1 real tokens (left-padded), budget 2: M = 5 forces row 0 to draw all
    # of [0, 5); row 1 draws 3 of them. M = 4 < 3 + 2: row 0 draws [0, 4) and the rank-4 token
    # repeats position 3.
    tokens = jnp.array([[7, 8, 9], [0, 0, 6]])
    valid = jnp.array([[True, True, True], [False, False, True]])
    table = np.asarray(_TABLE(tokens, valid, max_position=5, max_new_tokens=2))
    assert table.shape == (2, 5) and table[0].tolist() == [0, 1, 2, 3, 4]
    row = table[1]
    assert (np.diff(row[:3]) > 0).all() and (row[3:] == row[2]).all() and row.max() < 5
    short = np.asarray(_TABLE(tokens, valid, max_position=4, max_new_tokens=2))
    assert short[0].tolist() == [0, 1, 2, 3]
    ranks = jnp.ones((1, 6), bool)
    assert randomized.positions_from_table(jnp.asarray(short[:1]), ranks).tolist() == [
        [0, 1, 2, 3, 3, 3]
    ]


def test_decoding_table_is_a_function_of_the_prompt_tokens_only():
    """The same example left-padded in a prompt batch, right-padded with its target in a
    teacher-forced batch, or alone: the same drawn entries (and other prompts draw others)."""
    prompt, target = [5, 3, 9, 2], [4, 4, 1]
    left = np.array([[0, 0, *prompt], [6, 6, 6, 6, 6, 6]])
    left_valid = np.array([[0, 0, 1, 1, 1, 1], [1] * 6], bool)
    forced = np.array([[*prompt, *target, 0, 0, 0], [8, 8, 0, 0, 0, 0, 0, 0, 0, 0]])
    forced_valid = np.array([[1] * 7 + [0] * 3, [1] * 3 + [0] * 7], bool)
    budget, count = 5, len(prompt) + 5
    a = np.asarray(
        _TABLE(jnp.asarray(left), jnp.asarray(left_valid), max_position=50, max_new_tokens=budget)
    )
    b = np.asarray(
        _TABLE(
            jnp.asarray(forced),
            jnp.asarray(_prompt_valid(forced_valid, [4, 2])),
            max_position=50,
            max_new_tokens=budget,
        )
    )
    alone = np.asarray(
        _TABLE(
            jnp.asarray([prompt]), jnp.ones((1, 4), bool), max_position=50, max_new_tokens=budget
        )
    )
    assert a.shape == (2, 11) and b.shape == (2, 15) and alone.shape == (1, 9)
    np.testing.assert_array_equal(a[0, :count], b[0, :count])
    np.testing.assert_array_equal(a[0, :count], alone[0])
    drawn = a[0, :count]
    assert (np.diff(drawn) > 0).all() and drawn.min() >= 0 and drawn.max() < 50
    assert (a[0, count:] == drawn[-1]).all()
    assert (a[1, :count] != drawn).any()  # another prompt, another draw
    # Teacher forcing's positions: the i-th token of prompt + target takes entry i.
    positions = randomized.evaluation_positions(
        jnp.asarray(forced),
        jnp.asarray(forced_valid),
        jnp.asarray(_prompt_valid(forced_valid, [4, 2])),
        50,
        budget,
    )
    assert positions[0].tolist() == [*drawn[:7], drawn[6], drawn[6], drawn[6]]


def test_decoding_tables_are_uniform_subsets():
    # One real prompt token and a budget of 1 with M = 4: every 2-subset of [0, 4) has
    # probability 1/6 (prompts differ, so do their keys).
    tokens = jnp.asarray(np.arange(6000)[:, None], jnp.int32)
    table = np.asarray(_TABLE(tokens, jnp.ones((6000, 1), bool), max_position=4, max_new_tokens=1))
    codes = table[:, 0] * 4 + table[:, 1]
    counts = {code: int((codes == code).sum()) for code in np.unique(codes)}
    assert set(counts) == {a * 4 + b for a in range(4) for b in range(a + 1, 4)}
    # Binomial(6000, 1/6): mean 1000, std 28.9; 5 std is far beyond chance.
    assert all(abs(count - 1000) < 5 * 28.9 for count in counts.values()), counts


def test_eval_positions_do_not_depend_on_the_batch():
    model = _model("ape", 40)
    tokens = np.array([[5, 3, 9, 2, 0, 0, 0], [6, 6, 6, 6, 6, 6, 6]])
    valid = np.array([[1, 1, 1, 1, 0, 0, 0], [1] * 7], bool)
    batch = dict(
        tokens=jnp.asarray(tokens),
        valid=jnp.asarray(valid),
        positions=None,
        source_length=jnp.array([2, 3]),
    )
    alone = dict(
        tokens=jnp.asarray(tokens[:1, :5]),
        valid=jnp.asarray(valid[:1, :5]),
        positions=None,
        source_length=jnp.array([2]),
    )
    eval_positions = jax.jit(
        functools.partial(randomized.model_positions, model.pe, key=None, max_new_tokens=6)
    )
    in_batch, by_itself = eval_positions(batch), eval_positions(alone)
    np.testing.assert_array_equal(in_batch[0, :4], by_itself[0, :4])
    assert (np.diff(np.asarray(in_batch[1])) > 0).all()
    with pytest.raises(
        ValueError,
        match=r"needs max_new_tokens \(got None\) and "
        r"batch\['source_length'\]",
    ):
        randomized.model_positions(model.pe, batch, None)
    del batch["source_length"]
    with pytest.raises(ValueError, match=r"batch keys: \['positions', 'tokens', 'valid'\]"):
        randomized.model_positions(model.pe, batch, None, max_new_tokens=6)


def test_config_key_and_checks():
    assert randomized.max_position_of(ml_collections.ConfigDict(dict(name="t5"))) == 0
    config = ml_collections.ConfigDict({"name": "t5", randomized.CONFIG_KEY: 256})
    assert randomized.max_position_of(config) == 256
    with pytest.raises(
        ValueError,
        match=r"randomized_max_position must be a non-negative "
        r"integer \(0: off\), got -1",
    ):
        randomized.max_position_of({"name": "t5", randomized.CONFIG_KEY: -1})
    randomized.check_fits(0, 10_000, 10)  # off: nothing to check
    randomized.check_fits(100, 100, None)
    with pytest.raises(ValueError, match=r"=99 is below the longest sequence \(100 tokens\)"):
        randomized.check_fits(99, 100, None)
    with pytest.raises(ValueError, match=r"positions up to 199 .* up to 149: expected M <= 150"):
        randomized.check_fits(200, 100, 149)


def test_bad_arguments_are_rejected():
    valid = jnp.ones((2, 3), bool)
    with pytest.raises(ValueError, match="max_position must be >= 1, got 0"):
        randomized.sample_positions(jax.random.key(0), valid, 0)
    with pytest.raises(ValueError, match="expected a typed PRNG key"):
        randomized.sample_positions(jax.random.PRNGKey(0), valid, 5)
    with pytest.raises(ValueError, match=r"expected one key or 2 keys .* got \(3,\)"):
        randomized.sample_positions(jax.random.split(jax.random.key(0), 3), valid, 5)


# ---- Train steps with every PE.

SEQ, BATCH, VOCAB, M = 9, 4, 11, 64


def _model(pe_name: str, max_position: int, **pe_options) -> Decoder:
    pe = tiny.pe_config(pe_name, max_position=max_position, **pe_options)
    return Decoder(
        vocab_size=VOCAB,
        num_layers=1,
        d_model=16,
        num_heads=2,
        d_kv=8,
        d_ff=16,
        dropout_rate=0.0,
        pe=pe,
    )


def _batch() -> dict:
    """Right-padded rows, as the loader's training batches."""
    rng = np.random.default_rng(0)
    valid = jnp.asarray(np.sort(VALID, axis=1)[:, ::-1])
    loss_mask = (valid & (jnp.arange(SEQ)[None] >= 1)).astype(jnp.float32)
    return dict(
        tokens=jnp.asarray(rng.integers(2, VOCAB, (BATCH, SEQ)), jnp.int32),
        positions=jnp.broadcast_to(jnp.arange(SEQ, dtype=jnp.int32), (BATCH, SEQ)),
        valid=valid,
        loss_mask=loss_mask,
    )


def _params(model: Decoder, batch: dict, scale: float = 0.5):
    """numpy draws at the init's shapes (no init compile)."""
    abstract = jax.eval_shape(
        lambda: model.init(jax.random.key(0), batch["tokens"], batch["positions"], batch["valid"])
    )
    rng = np.random.default_rng(1)
    return jax.tree.map(
        lambda leaf: jnp.asarray(scale * rng.standard_normal(leaf.shape), leaf.dtype),
        nn.unbox(abstract["params"]),
    )


@pytest.mark.parametrize("pe_name", positional.names())
def test_train_step_uses_the_sampled_positions(pe_name):
    model, batch, optimizer = _model(pe_name, M), _batch(), optax.sgd(0.0)
    params = _params(model, batch)
    state = dict(step=jnp.int32(3), params=params, opt_state=optimizer.init(params))

    def loss(positions):
        logits = model.apply({"params": params}, batch["tokens"], positions, batch["valid"])
        return step_lib.loss_and_metrics(logits, batch)[0]

    @jax.jit
    def losses(state, batch, dropout_key):
        """(the train step's loss, the loss at the expected draw, at positions 0..T-1)."""
        _, metrics = step_lib.train_step(
            state,
            batch,
            dropout_key,
            model=model,
            optimizer=optimizer,
            schedule=optax.constant_schedule(0.0),
        )
        key = jax.random.fold_in(jax.random.fold_in(dropout_key, 3), step_lib.POSITIONS_STREAM)
        sampled = randomized.sample_positions(key, batch["valid"], M)
        return metrics["loss"], loss(sampled), loss(batch["positions"])

    stepped, expected, standard = (float(x) for x in losses(state, batch, jax.random.key(5)))
    assert np.isfinite(stepped)
    assert stepped == pytest.approx(expected, rel=1e-6)
    # NoPE sees only the order of positions; CoPE counts gates (position ids only order the
    # keys); abacus and coupling embed digit runs instead.
    if pe_name in ("nope", "cope") or positional.get(pe_name).embed_input == "digit_runs":
        assert stepped == pytest.approx(standard, rel=1e-6)
    else:
        assert abs(stepped - standard) > 1e-5, pe_name


# ---- Evaluation: teacher forcing and greedy decoding see the same positions.


@pytest.mark.parametrize("pe_name", ["ape", "rotary"])
def test_teacher_forcing_agrees_with_greedy_decoding(pe_name):
    """Greedy outputs at randomized positions, cut to targets of 6, 3 and 1 tokens (shorter
    than the budget: teacher forcing then reads a prefix of the decoding table), are what
    teacher forcing calls correct; a changed target token is not."""
    # Rotary on every dimension (not the paper's 25%), so positions move these tiny outputs.
    options = {"rotary": dict(fraction=1.0)}.get(pe_name, {})
    model, budget, never = _model(pe_name, M, **options), 6, VOCAB  # EOS never emitted
    params = _params(model, _batch(), scale=1.0)
    valid = np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 1, 1]], bool)
    tokens = np.where(valid, np.random.default_rng(3).integers(2, VOCAB, valid.shape), 0)
    greedy = jax.jit(
        functools.partial(decoding.greedy_decode, model, max_new_tokens=budget, eos_id=never)
    )
    outputs = np.asarray(greedy(params, jnp.asarray(tokens, jnp.int32), jnp.asarray(valid)))
    records = []
    for row, keep in enumerate((6, 3, 1)):
        prompt = tokens[row][valid[row]]
        records.append(
            dict(
                tokens=np.concatenate([prompt, outputs[row, :keep]]),
                source_length=len(prompt),
                length=keep,
            )
        )
    changed = dict(records[0], tokens=records[0]["tokens"].copy())
    changed["tokens"][5 + 2] = (changed["tokens"][5 + 2] + 1) % VOCAB  # target token 2
    batch = loader.pack([*records, changed], range(4), 16)
    batch = {
        key: jnp.asarray(batch[key])
        for key in ("tokens", "positions", "valid", "loss_mask", "source_length")
    }
    forced = jax.jit(
        functools.partial(eval_steps.teacher_forced_correct, model=model, max_new_tokens=budget)
    )
    assert np.asarray(forced(params, batch)).tolist() == [True, True, True, False]
    # Not vacuous: at positions 0, 1, ... (the same parameters) the outputs are not all kept.
    plain = jax.jit(
        functools.partial(eval_steps.teacher_forced_correct, model=_model(pe_name, 0, **options))
    )
    assert not np.asarray(plain(params, batch))[:3].all()
