"""Tests of `scan_layers` (lenggen/model/decoder.py): the scanned stack is the unrolled stack.

Given the unrolled model's weights restacked (`stack_layers`), the scanned model gives the
same logits, gradients, train step, attention weights and KV-cache greedy decoding, for every
PE. Tolerance: float32 results of the same operations in a different program agree to 1e-5.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from lenggen import sharding
from lenggen.model import decoder, decoding, kv_cache
from lenggen.model.decoder import Decoder
from lenggen.train import optimizer as optimizer_lib
from lenggen.train import step as step_lib
from tests.model import tiny

VOCAB = 17
# Three layers (not two) so a swapped or reversed layer order shows.
SIZES = dict(tiny.SIZES, num_layers=3, dropout_rate=0.0)
TOKENS = jnp.asarray(np.random.default_rng(0).integers(3, VOCAB, (2, 9)), jnp.int32)
POSITIONS = jnp.broadcast_to(jnp.arange(9, dtype=jnp.int32), (2, 9))
VALID = jnp.ones((2, 9), bool).at[1, 7:].set(False)


def _models(variant: str, **overrides):
    kwargs = dict(SIZES, vocab_size=VOCAB, pe=tiny.pe_config(variant), **overrides)
    return Decoder(**kwargs), Decoder(**kwargs, scan_layers=True)


def _init(model: Decoder, seed: int = 1):
    return nn.unbox(model.init(jax.random.key(seed), TOKENS, POSITIONS, VALID)["params"])


# The PEs that act inside the blocks, each way: parameters shared by all layers (t5), a bias
# without parameters (alibi), a rotation of queries and keys (rotary). (An embedding PE acts
# before the stack; every PE's outputs through the whole model are in test_decoder.py.)
SCAN_VARIANTS = ("t5", "alibi", "rotary")


@pytest.fixture(scope="module", params=SCAN_VARIANTS)
def pair(request):
    """(unrolled model, scanned model, unrolled params, the same params stacked)."""
    unrolled, scanned = _models(request.param)
    params = _init(unrolled)
    return unrolled, scanned, params, decoder.stack_layers(params, SIZES["num_layers"])


def _close(a, b, atol=1e-5):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=atol), a, b)


def test_scanned_parameters_are_the_stacked_layout(pair):
    _, scanned, params, stacked = pair
    own = _init(scanned)
    assert jax.tree.structure(own) == jax.tree.structure(stacked)
    assert jax.tree.map(jnp.shape, own) == jax.tree.map(jnp.shape, stacked)
    # The leading axis is the layer: layer 2's query is block_2's.
    np.testing.assert_array_equal(
        stacked["blocks"]["layer"]["attention"]["query"][2], params["block_2"]["attention"]["query"]
    )
    assert "block_0" not in stacked and "pe" not in stacked["blocks"]["layer"]


def test_stack_unstack_round_trip(pair):
    _, _, params, stacked = pair
    back = decoder.unstack_layers(stacked)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, back, params)


def test_stack_layers_rejects_a_wrong_depth(pair):
    _, _, params, _ = pair
    with pytest.raises(ValueError, match="block_0..block_3"):
        decoder.stack_layers(params, 4)
    with pytest.raises(ValueError, match="block_0..block_1"):
        decoder.stack_layers(params, 2)


@pytest.mark.parametrize("rule", optimizer_lib.DECAY_RULES)
def test_weight_decay_mask_is_the_stacked_mask(pair, rule):
    _, _, params, stacked = pair
    mask = optimizer_lib.decay_mask(stacked, rule)
    expected = optimizer_lib.decay_mask(params, rule)
    layer = mask.pop("blocks")["layer"]
    for i in range(SIZES["num_layers"]):
        assert expected.pop(f"block_{i}") == layer
    assert mask == expected  # the embedding, final norm and PE entries
    assert layer["attention"]["query"] is True


def test_same_logits_and_gradients(pair):
    unrolled, scanned, params, stacked = pair

    def loss(model, p):
        logits = model.apply({"params": p}, TOKENS, POSITIONS, VALID)
        return jnp.sum(jnp.where(VALID[..., None], logits, 0.0) ** 2) / 100

    value, grads = jax.jit(jax.value_and_grad(lambda p: loss(unrolled, p)))(params)
    value_s, grads_s = jax.jit(jax.value_and_grad(lambda p: loss(scanned, p)))(stacked)
    _close(value_s, value)
    # Every gradient, the shared PE parameters' (summed over layers) included.
    _close(decoder.unstack_layers(grads_s), grads)
    assert float(jnp.abs(grads["block_0"]["ffn"]["wi"]).sum()) > 0


def test_same_attention_weights(pair):
    unrolled, scanned, params, stacked = pair
    layers = []
    for model, p in ((unrolled, params), (scanned, stacked)):
        _, state = model.apply({"params": p}, TOKENS, POSITIONS, VALID, mutable=["intermediates"])
        layers.append(decoder.layer_intermediates(state["intermediates"], 3, "attention_weights"))
    assert len(layers[1]) == 3 and layers[1][0].shape == (2, SIZES["num_heads"], 9, 9)
    _close(layers[1], layers[0])


def test_same_cached_greedy_decoding(pair):
    unrolled, scanned, params, stacked = pair
    prompt_valid = jnp.ones((2, 5), bool).at[0, :2].set(False)  # left-padded
    prompt = jnp.where(prompt_valid, TOKENS[:, :5], 0)
    outputs = [
        decoding.greedy_decode(model, p, prompt, prompt_valid, 6, eos_id=1)
        for model, p in ((unrolled, params), (scanned, stacked))
    ]
    np.testing.assert_array_equal(outputs[1], outputs[0])
    # And the scanned cache is stacked per layer: [layers, batch, slots, heads, head_dim].
    cache = kv_cache.init_cache(scanned, 2, 10)
    assert cache["blocks"]["layer"]["attention"]["cached_key"].shape == (3, 2, 10, 3, 8)
    assert cache["blocks"]["layer"]["attention"]["cache_index"].shape == (3,)


def test_same_train_step():
    """One AdamW step (clipping, weight-decay mask) on each layout: the same new weights."""
    unrolled, scanned = _models("t5")
    params = _init(unrolled)
    train = dict(
        learning_rate=1e-2,
        end_learning_rate=1e-3,
        num_steps=10,
        warmup_fraction=0.0,
        weight_decay=0.05,
        weight_decay_mask="hf_trainer_4_16",
        adam_b1=0.9,
        adam_b2=0.999,
        adam_eps=1e-8,
        grad_clip_norm=0.5,
    )
    train = ml_collections.ConfigDict(train)
    optimizer = optimizer_lib.make_optimizer(train)
    schedule = optax.constant_schedule(1e-2)
    loss_mask = VALID.at[:, :3].set(False).astype(jnp.float32)
    batch = dict(tokens=TOKENS, positions=POSITIONS, valid=VALID, loss_mask=loss_mask)
    new = []
    for model, p in ((unrolled, params), (scanned, decoder.stack_layers(params, 3))):
        state = dict(step=jnp.zeros((), jnp.int32), params=p, opt_state=optimizer.init(p))
        step = jax.jit(
            functools.partial(
                step_lib.train_step, model=model, optimizer=optimizer, schedule=schedule
            )
        )
        state, metrics = step(state, batch, jax.random.key(0))
        new.append((state["params"], metrics["loss"]))
    _close(new[1][1], new[0][1])
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new[0][0], params)
    assert min(jax.tree.leaves(moved)) > 0  # every parameter took a step
    _close(decoder.unstack_layers(new[1][0]), new[0][0])


def test_layer_axis_is_named_and_unsharded():
    _, scanned = _models("t5")
    tokens = jnp.zeros((1, 1), jnp.int32)
    boxed = jax.eval_shape(lambda: scanned.init(jax.random.key(0), tokens, tokens, tokens >= 0))
    query = boxed["params"]["blocks"]["layer"]["attention"]["query"]
    assert query.names == ("layers", "embed", "heads", "kv")
    mesh = sharding.make_mesh((1, -1))  # the feed-forward width (24) on `model`
    specs = sharding.param_shardings(boxed["params"], mesh)["blocks"]["layer"]
    assert specs["ffn"]["wi"].spec == P(None, None, "model")
    assert specs["attention_norm"]["scale"].spec == P(None, None)


def test_dropout_acts_and_follows_the_rng():
    """The scanned stack takes its dropout rng from the 'dropout' stream (split per layer by
    the scan): the same key gives the same output, another key another, no dropout a third."""
    _, scanned = _models("nope", dropout_rate=0.5)
    stacked = _init(scanned)

    @functools.partial(jax.jit, static_argnums=1)
    def apply(key, deterministic):
        return scanned.apply(
            {"params": stacked},
            TOKENS,
            POSITIONS,
            VALID,
            deterministic=deterministic,
            rngs={"dropout": key},
        )

    def run(seed):
        return apply(jax.random.key(seed or 0), seed is None)

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.allclose(run(3), run(4))
    assert not np.allclose(run(3), run(None))


@pytest.mark.parametrize("variant", ["cope", "abacus"])
def test_a_per_layer_pe_table_and_digit_runs_scan_too(variant):
    """CoPE's table is a parameter of every layer's attention (stacked when scanned); abacus
    embeds digit runs before the stack."""
    unrolled, scanned = _models(variant)
    # Every parameter redrawn, so that each layer's CoPE table (zeros at init) differs.
    leaves, tree = jax.tree.flatten(_init(unrolled))
    rng = np.random.default_rng(3)
    params = tree.unflatten([jnp.asarray(rng.normal(size=x.shape), x.dtype) for x in leaves])
    stacked = decoder.stack_layers(params, SIZES["num_layers"])
    logits = [
        m.apply({"params": p}, TOKENS, POSITIONS, VALID)
        for m, p in ((unrolled, params), (scanned, stacked))
    ]
    _close(jnp.where(VALID[..., None], logits[1], 0), jnp.where(VALID[..., None], logits[0], 0))
