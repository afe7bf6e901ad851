"""Tests of lenggen/model/decoder.py: causality, PE invariances, padding, sizes, init, names.

Tolerance: float32 logits that should be equal mathematically agree to 1e-5 (1e-4 where rotary
angles of shifted positions are involved).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lenggen.model.decoder import CONFIG_FIELDS, Decoder
from lenggen.model.decoding import prompt_positions
from tests.model import tiny

VOCAB = 17
VARIANTS = tiny.VARIANTS
TINY = tiny.SIZES
BASE = dict(num_layers=12, d_model=768, num_heads=12, d_kv=64, d_ff=3072, dropout_rate=0.1)


_pe = tiny.pe_config


def _abstract_params(model: Decoder):
    """Boxed parameter shapes, by `jax.eval_shape` (instant, even for the base model)."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    init = lambda: model.init(jax.random.key(0), tokens, tokens, tokens >= 0)  # noqa: E731
    return jax.eval_shape(init)["params"]


def _random_params(model: Decoder, seed: int = 0):
    """Parameters drawn with numpy: no init compile; unit-scale position tables."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "scale":
            return 1.0 + 0.1 * rng.standard_normal(leaf.shape)
        if name in ("embedding", "rel_embedding"):
            return rng.standard_normal(leaf.shape)
        fan_in = math.prod(leaf.shape[:2]) if name == "out" else leaf.shape[0]
        return rng.standard_normal(leaf.shape) / math.sqrt(fan_in)

    params = nn.meta.unbox(_abstract_params(model))
    return jax.tree_util.tree_map_with_path(lambda p, s: jnp.asarray(draw(p, s), s.dtype), params)


@pytest.fixture(scope="module", params=VARIANTS)
def tiny(request):
    """(variant, model, params, jitted forward): one compile per variant for all [2, 9] inputs."""
    model = Decoder(vocab_size=VOCAB, pe=_pe(request.param), **TINY)
    forward = jax.jit(lambda params, *inputs: model.apply({"params": params}, *inputs))
    return request.param, model, _random_params(model), forward


def _tokens(seed: int, shape=(2, 9)) -> jnp.ndarray:
    return jnp.asarray(np.random.default_rng(seed).integers(0, VOCAB, shape), jnp.int32)


ARANGE = jnp.broadcast_to(jnp.arange(9, dtype=jnp.int32), (2, 9))
ALL_VALID = jnp.ones((2, 9), bool)


def test_causal(tiny):
    _, _, params, forward = tiny
    tokens = _tokens(0)
    changed = tokens.at[:, 5:].set((tokens[:, 5:] + 1) % VOCAB)
    before = forward(params, tokens, ARANGE, ALL_VALID)
    after = forward(params, changed, ARANGE, ALL_VALID)
    assert before.shape == (2, 9, VOCAB) and before.dtype == jnp.float32
    np.testing.assert_allclose(after[:, :5], before[:, :5], atol=1e-5)
    assert np.abs(after[:, 5:] - before[:, 5:]).min(axis=-1).max() > 1e-3


def test_shift_of_all_positions(tiny):
    # Relative PEs and NoPE see only position differences; APE adds a different code. FIRE
    # too while every query is below its threshold L (|m| * 512 > 45 for these draws).
    variant, _, params, forward = tiny
    tokens = _tokens(1)
    base = forward(params, tokens, ARANGE, ALL_VALID)
    shifted = forward(params, tokens, ARANGE + 37, ALL_VALID)
    if variant in ("ape", "ape_learned"):
        assert np.abs(shifted - base).max() > 1e-2
    else:
        np.testing.assert_allclose(shifted, base, atol=1e-4)


def test_key_padding_never_changes_a_valid_query(tiny):
    # The same 6 real tokens left-padded and right-padded (3 pads of different garbage tokens).
    _, _, params, forward = tiny
    real = _tokens(2, (2, 6))
    left_valid = jnp.concatenate([jnp.zeros((2, 3), bool), jnp.ones((2, 6), bool)], axis=1)
    left = jnp.concatenate([_tokens(3, (2, 3)), real], axis=1)
    right = jnp.concatenate([real, _tokens(4, (2, 3))], axis=1)
    right_positions = jnp.concatenate([ARANGE[:, :6], jnp.full((2, 3), 5, jnp.int32)], axis=1)
    from_left = forward(params, left, prompt_positions(left_valid), left_valid)
    from_right = forward(params, right, right_positions, left_valid[:, ::-1])
    np.testing.assert_allclose(from_left[:, 3:], from_right[:, :6], atol=1e-5)


def test_tied_scaled_output_layer():
    # With every block's output projections zeroed the blocks are the identity, so (NoPE,
    # norm scales 1) logits = RMSNorm(E[t]) * d_model^-0.5 @ E^T.
    model = Decoder(vocab_size=VOCAB, pe=_pe("nope"), **TINY)
    params = _random_params(model)
    for layer in ("block_0", "block_1"):
        params[layer]["attention"]["out"] = jnp.zeros_like(params[layer]["attention"]["out"])
        params[layer]["ffn"]["wo"] = jnp.zeros_like(params[layer]["ffn"]["wo"])
    params["final_norm"]["scale"] = jnp.ones(16)
    tokens = _tokens(5)
    logits = jax.jit(model.apply)({"params": params}, tokens, ARANGE, ALL_VALID)
    table = np.asarray(params["embedding"], np.float64)
    x = table[np.asarray(tokens)]
    x = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(logits, x * 16**-0.5 @ table.T, atol=1e-5)


def _count(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def test_parameter_count_of_the_base_model():
    d, layers, heads, d_kv, d_ff, vocab = 768, 12, 12, 64, 3072, 32100
    embeddings = vocab * d  # docs/paper.md "Model": 24.65M
    per_layer = 4 * d * heads * d_kv + 2 * d * d_ff + 2 * d  # q, k, v, o; wi, wo; two norms
    assert embeddings == 24_652_800
    assert embeddings + layers * per_layer == 109_605_888  # docs/paper.md "Model": ~109.6M
    nope = embeddings + layers * per_layer + d  # + the final norm
    expected = {
        "nope": nope, "ape": nope, "alibi": nope, "rotary": nope,
        "t5": nope + 32 * heads,  # one shared table
        "fire": nope + 2 + 2 * 32 + 32 * heads + heads,  # c, L; one shared MLP 1 -> 32 -> heads
        "ape_learned": nope + 16384 * d,
        "cope": nope + layers * 65 * d_kv,  # one [p_max + 1, d_kv] table per layer
    }  # fmt: skip
    for variant, count in expected.items():
        pe = _pe(variant)
        if variant == "ape_learned":
            pe.ape.max_length = 16384
        assert _count(_abstract_params(Decoder(vocab_size=vocab, pe=pe, **BASE))) == count, variant


LOGICAL_NAMES = {
    "embedding": ("vocab", "embed"),
    "query": ("embed", "heads", "kv"),
    "key": ("embed", "heads", "kv"),
    "value": ("embed", "heads", "kv"),
    "out": ("heads", "kv", "embed"),
    "wi": ("embed", "mlp"),
    "wo": ("mlp", "embed"),
    "scale": ("embed",),
    "rel_embedding": ("relpos_buckets", "heads"),
    "pe/embedding": ("positions", "embed"),
    "c": (None,),
    "threshold_multiplier": (None,),
    "hidden_kernel": ("fire_mlp",),
    "hidden_bias": ("fire_mlp",),
    "output_kernel": ("fire_mlp", "heads"),
    "output_bias": ("heads",),
    "r1": ("heads",),
    "r2": ("heads",),
    "cope_embedding": (None, "kv"),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_parameter_has_logical_names(variant):
    abstract = _abstract_params(Decoder(vocab_size=VOCAB, pe=_pe(variant), **TINY))
    boxes = jax.tree_util.tree_flatten_with_path(
        abstract, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
    )[0]
    assert len(boxes) == len(jax.tree.leaves(abstract))  # no unboxed leaf
    for path, box in boxes:
        keys = [p.key for p in path]
        name = "pe/embedding" if keys == ["pe", "embedding"] else keys[-1]
        assert isinstance(box, nn.LogicallyPartitioned), keys
        assert box.names == LOGICAL_NAMES[name], keys
        assert len(box.names) == box.value.ndim


def test_t5_table_is_one_table_for_all_layers():
    abstract = _abstract_params(Decoder(vocab_size=VOCAB, pe=_pe("t5"), **TINY))
    boxes = jax.tree_util.tree_flatten_with_path(
        abstract, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
    )[0]
    paths = [[p.key for p in path] for path, _ in boxes if path[-1].key == "rel_embedding"]
    assert paths == [["pe", "rel_embedding"]]
    assert abstract["pe"]["rel_embedding"].value.shape == (32, 3)


def test_hf_t5_init_scales():
    d, heads, d_kv, d_ff = 64, 3, 32, 96
    model = Decoder(
        vocab_size=300,
        num_layers=1,
        d_model=d,
        num_heads=heads,
        d_kv=d_kv,
        d_ff=d_ff,
        dropout_rate=0.1,
        pe=_pe("t5"),
    )
    tokens = jnp.zeros((1, 1), jnp.int32)
    init = jax.jit(lambda key: model.init(key, tokens, tokens, tokens >= 0))
    params = nn.meta.unbox(init(jax.random.key(0, impl="rbg"))["params"])  # rbg: fast compile
    attention, ffn = params["block_0"]["attention"], params["block_0"]["ffn"]
    expected = {
        "embedding": (params["embedding"], 1.0),
        "query": (attention["query"], (d * d_kv) ** -0.5),
        "key": (attention["key"], d**-0.5),
        "value": (attention["value"], d**-0.5),
        "out": (attention["out"], (heads * d_kv) ** -0.5),
        "wi": (ffn["wi"], d**-0.5),
        "wo": (ffn["wo"], d_ff**-0.5),
    }
    for name, (value, std) in expected.items():
        assert abs(float(jnp.mean(value))) < 0.1 * std, name
        assert abs(float(jnp.std(value)) / std - 1.0) < 0.1, name
    np.testing.assert_array_equal(params["block_0"]["attention_norm"]["scale"], np.ones(d))
    np.testing.assert_array_equal(params["final_norm"]["scale"], np.ones(d))


def test_dropout_uses_the_dropout_rng():
    model = Decoder(vocab_size=VOCAB, pe=_pe("t5"), **TINY)
    params = _random_params(model)

    @jax.jit
    def run(key):
        return model.apply(
            {"params": params},
            _tokens(6),
            ARANGE,
            ALL_VALID,
            deterministic=False,
            rngs={"dropout": key},
        )

    keys = [jax.random.key(seed, impl="rbg") for seed in (1, 1, 2)]  # rbg: fast compile
    one, again, other = (run(key) for key in keys)
    exact = jax.jit(model.apply)({"params": params}, _tokens(6), ARANGE, ALL_VALID)
    np.testing.assert_array_equal(one, again)
    assert np.abs(one - other).max() > 1e-3 and np.abs(one - exact).max() > 1e-3


def test_attention_weights_are_sown():
    model = Decoder(vocab_size=VOCAB, pe=_pe("alibi"), **TINY)
    valid = ALL_VALID.at[0, 2].set(False)
    apply = jax.jit(
        lambda params: model.apply(
            {"params": params}, _tokens(7), ARANGE, valid, mutable=["intermediates"]
        )
    )
    _, state = apply(_random_params(model))
    for layer in ("block_0", "block_1"):
        (weights,) = state["intermediates"][layer]["attention"]["attention_weights"]
        assert weights.shape == (2, 3, 9, 9)
        np.testing.assert_allclose(weights.sum(-1), np.ones((2, 3, 9)), atol=1e-6)
        assert (weights[:, :, np.triu_indices(9, 1)[0], np.triu_indices(9, 1)[1]] == 0).all()
        assert (weights[0, :, 3:, 2] == 0).all()  # the pad key


def test_bfloat16_compute():
    model32 = Decoder(vocab_size=VOCAB, pe=_pe("rotary"), **TINY)
    model16 = Decoder(vocab_size=VOCAB, pe=_pe("rotary"), **TINY, dtype="bfloat16")
    params = _random_params(model32)
    logits16 = jax.jit(model16.apply)({"params": params}, _tokens(8), ARANGE, ALL_VALID)
    logits32 = jax.jit(model32.apply)({"params": params}, _tokens(8), ARANGE, ALL_VALID)
    assert logits16.dtype == jnp.float32
    np.testing.assert_allclose(logits16, logits32, atol=0.1)
    assert jax.tree.leaves(_abstract_params(model16))[0].dtype == jnp.float32  # params stay fp32


def test_from_config():
    # The digit ids come from the task's tokenizer, not from config.model.
    sizes = {key: value for key, value in TINY.items() if key != "digit_ids"}
    config = ml_collections.ConfigDict(
        dict(
            sizes,
            dtype="float32",
            precision="highest",
            attention_impl="reference",
            pe=_pe("t5"),
            scan_layers=False,
        )
    )
    assert sorted(config.keys()) == sorted(CONFIG_FIELDS)
    model = Decoder.from_config(config, vocab_size=VOCAB, digit_ids=TINY["digit_ids"])
    assert model == Decoder(vocab_size=VOCAB, pe=_pe("t5"), **TINY)
    assert Decoder.from_config(config, vocab_size=VOCAB).digit_ids == ()
    assert hash(model) == hash(Decoder(vocab_size=VOCAB, pe=_pe("t5"), **TINY))  # jit-static
    extra = ml_collections.ConfigDict(dict(config.to_dict(), d_head=8))
    with pytest.raises(ValueError, match=r"missing \[\], unknown \['d_head'\]"):
        Decoder.from_config(extra, vocab_size=VOCAB)
    del config["dtype"]
    with pytest.raises(ValueError, match=r"missing \['dtype'\], unknown \[\]"):
        Decoder.from_config(config, vocab_size=VOCAB)
    # A config.json written before config.model.precision existed reads as 'highest'.
    del config["precision"]
    config.dtype = "float32"
    assert Decoder.from_config(config, vocab_size=VOCAB).precision == "highest"
    # ... and one written before config.model.scan_layers as unrolled blocks.
    del config["scan_layers"]
    assert Decoder.from_config(config, vocab_size=VOCAB).scan_layers is False
    config.scan_layers = True
    assert Decoder.from_config(config, vocab_size=VOCAB).scan_layers is True


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(dtype="float16"), r"dtype must be one of \('float32', 'bfloat16'\), got 'float16'"),
        (dict(attention_impl="flash"), r"unknown attention kernel 'flash'; valid names: \("),
        (
            dict(precision="fp32"),
            r"precision must be one of \('highest', 'high', 'default'\), "
            "got 'fp32'",
        ),
        (dict(platform="metal"), r"unknown JAX platform 'metal'; expected one of"),
        (dict(pe=_pe("xpos")), "unknown positional encoding 'xpos'"),
        (dict(dropout_rate=1.0), r"dropout_rate must be in \[0, 1\), got 1.0"),
        (dict(num_heads=0), "num_heads must be >= 1, got 0"),
        (dict(scan_layers="yes"), "scan_layers must be True or False, got 'yes'"),
    ],
)
def test_bad_settings_are_rejected(overrides, message):
    settings = dict(TINY, vocab_size=VOCAB, pe=_pe("nope"))
    settings.update(overrides)
    with pytest.raises(ValueError, match=message):
        Decoder(**settings)
