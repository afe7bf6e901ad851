import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lenggen.train import optimizer


def _train_config(**overrides):
    values = dict(
        num_steps=100,
        learning_rate=3e-5,
        end_learning_rate=1e-7,
        warmup_fraction=0.06,
        weight_decay=0.05,
        adam_b1=0.9,
        adam_b2=0.999,
        adam_eps=1e-8,
        grad_clip_norm=1.0,
    )
    values.update(overrides)
    return ml_collections.ConfigDict(values)


def test_schedule_warms_up_linearly_then_decays_to_the_end_rate():
    schedule = optimizer.learning_rate_schedule(_train_config())
    # 6% of 100 steps = 6 warmup steps: lr(t) = 3e-5 * t / 6.
    np.testing.assert_allclose(float(schedule(0)), 0.0)
    np.testing.assert_allclose(float(schedule(3)), 1.5e-5, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(6)), 3e-5, rtol=1e-6)
    # Then linear over the remaining 94 steps from 3e-5 to 1e-7.
    np.testing.assert_allclose(float(schedule(53)), 3e-5 + (1e-7 - 3e-5) * 47 / 94, rtol=1e-5)
    np.testing.assert_allclose(float(schedule(100)), 1e-7, rtol=1e-5)


def test_norms_and_biases_skips_norm_scales_and_biases_only():
    params = {
        "block_0": {"pre_attention_norm": {"scale": jnp.ones(3)}, "query": {"kernel": jnp.ones(3)}},
        "pe": {"hidden_bias": jnp.ones(3)},
    }
    tx = optimizer.make_optimizer(
        _train_config(
            learning_rate=1.0,
            warmup_fraction=0.0,
            end_learning_rate=1.0,
            weight_decay_mask="norms_and_biases",
        )
    )
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    # With zero gradients Adam's update is 0, so only decoupled weight decay moves a parameter:
    # -lr * wd * p = -0.05 for the kernel, and nothing for the norm scale.
    np.testing.assert_allclose(updates["block_0"]["query"]["kernel"], -0.05 * np.ones(3), rtol=1e-6)
    np.testing.assert_allclose(updates["block_0"]["pre_attention_norm"]["scale"], np.zeros(3))
    np.testing.assert_allclose(updates["pe"]["hidden_bias"], np.zeros(3))


# --- The weight-decay mask of the official runs (HF Trainer 4.16) on real parameter trees. ---

import flax.linen as nn  # noqa: E402
import pytest  # noqa: E402

from configs import base  # noqa: E402
from lenggen import config_schema  # noqa: E402
from lenggen.model import decoder, positional  # noqa: E402

# The official CustomT5DecoderOnly's parameter names for 2 layers (written out by hand from its
# module tree: shared embedding, per block a self-attention layer and a DenseReluDense layer,
# each with its T5LayerNorm; the relative table in block 0 only; `wpe` for the learned APE).
_OFFICIAL_BLOCK = (
    "layer.0.SelfAttention.q.weight",
    "layer.0.SelfAttention.k.weight",
    "layer.0.SelfAttention.v.weight",
    "layer.0.SelfAttention.o.weight",
    "layer.0.layer_norm.weight",
    "layer.1.DenseReluDense.wi.weight",
    "layer.1.DenseReluDense.wo.weight",
    "layer.1.layer_norm.weight",
)
_OFFICIAL_COMMON = {"shared.weight", "decoder.final_layer_norm.weight"} | {
    f"decoder.block.{i}.{name}" for i in range(2) for name in _OFFICIAL_BLOCK
}
_T5_TABLE = "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
_OFFICIAL_EXTRA = {
    "nope": set(),
    "ape": set(),
    "ape_learned": {"decoder.wpe.weight"},
    "t5": {_T5_TABLE},
    "alibi": set(),
    "rotary": set(),
}


def _params(pe_name: str) -> dict:
    """The real parameter tree of a 2-layer decoder with PE `pe_name` (`ape_learned`: APE with
    a learned table)."""
    pe = config_schema.pe_section("ape" if pe_name == "ape_learned" else pe_name)
    if pe_name == "ape_learned":
        pe.ape.kind, pe.ape.max_length = "learned", 16
    model = decoder.Decoder(
        vocab_size=11,
        num_layers=2,
        d_model=16,
        num_heads=2,
        d_kv=8,
        d_ff=32,
        dropout_rate=0.0,
        pe=pe,
    )
    tokens = jnp.zeros((1, 5), jnp.int32)
    positions = jnp.arange(5, dtype=jnp.int32)[None]
    variables = model.init(jax.random.key(0), tokens, positions, jnp.ones((1, 5), bool))
    return nn.unbox(variables["params"])


def _by_hf_name(params, rule: str) -> dict[str, bool]:
    mask = optimizer.decay_mask(params, rule)
    flat = jax.tree_util.tree_flatten_with_path(mask)[0]
    return {optimizer.hf_parameter_name(optimizer._keys(path)): bool(v) for path, v in flat}


@pytest.mark.parametrize("pe_name", sorted(_OFFICIAL_EXTRA))
def test_every_parameter_maps_to_the_official_name_and_decays_as_hf_trainer_did(pe_name):
    by_name = _by_hf_name(_params(pe_name), "hf_trainer_4_16")
    # The mapping is onto the official model's names: nothing missing, nothing extra.
    assert set(by_name) == _OFFICIAL_COMMON | _OFFICIAL_EXTRA[pe_name]
    # HF Trainer 4.16: no decay for names containing "bias"; T5LayerNorm is not nn.LayerNorm,
    # so its weights decay. Hence exactly T5's table is spared.
    assert {name for name, decays in by_name.items() if not decays} == (
        {_T5_TABLE} if pe_name == "t5" else set()
    )
    assert by_name["decoder.block.1.layer.1.layer_norm.weight"] is True
    assert by_name["decoder.final_layer_norm.weight"] is True


def test_fire_kernels_decay_and_its_biases_do_not():
    params = _params("fire")
    mask = optimizer.decay_mask(params, "hf_trainer_4_16")
    assert {k: bool(v) for k, v in mask["pe"].items()} == {
        "c": True,
        "threshold_multiplier": True,
        "hidden_kernel": True,
        "hidden_bias": False,
        "output_kernel": True,
        "output_bias": False,
    }
    assert bool(mask["block_0"]["attention_norm"]["scale"]) is True


def test_kerple_parameters_take_the_authors_names_and_do_not_decay():
    params = _params("kerple")
    assert optimizer.hf_parameter_name(("pe", "r1")) == "decoder.kerple.bias_p"
    assert optimizer.hf_parameter_name(("pe", "r2")) == "decoder.kerple.bias_a"
    mask = optimizer.decay_mask(params, "hf_trainer_4_16")
    assert {k: bool(v) for k, v in mask["pe"].items()} == {"r1": False, "r2": False}
    assert bool(mask["block_0"]["attention"]["query"]) is True


def test_norms_and_biases_rule_is_the_previous_choice():
    mask = optimizer.decay_mask(_params("t5"), "norms_and_biases")
    assert bool(mask["pe"]["rel_embedding"]) is True  # the opposite of the official runs
    assert bool(mask["block_1"]["ffn_norm"]["scale"]) is False
    assert bool(mask["final_norm"]["scale"]) is False
    assert bool(mask["block_0"]["attention"]["query"]) is True


@pytest.mark.parametrize(
    "rule, table_moves, norm_moves",
    [("hf_trainer_4_16", False, True), ("norms_and_biases", True, False)],
)
def test_adamw_decays_exactly_the_masked_parameters(rule, table_moves, norm_moves):
    params = _params("t5")
    train = _train_config(
        learning_rate=1.0, warmup_fraction=0.0, end_learning_rate=1.0, weight_decay_mask=rule
    )
    tx = optimizer.make_optimizer(train)
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    # Zero gradients: Adam's step is 0, so only decoupled decay moves a leaf, by -lr*wd*p.
    table, scale = params["pe"]["rel_embedding"], params["final_norm"]["scale"]
    np.testing.assert_allclose(
        updates["pe"]["rel_embedding"],
        -0.05 * table if table_moves else np.zeros_like(table),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        updates["final_norm"]["scale"],
        -0.05 * scale if norm_moves else np.zeros_like(scale),
        rtol=1e-6,
    )


def test_the_paper_config_uses_the_official_mask_and_a_bad_one_is_refused():
    config = base.get_config("task=copy,pe=t5")
    assert config.train.weight_decay_mask == optimizer.PAPER_MASK == "hf_trainer_4_16"
    config.train.weight_decay_mask = "layernorm"
    with pytest.raises(config_schema.ConfigError, match="weight_decay_mask='layernorm'"):
        config_schema.validate(config, num_devices=1)


def test_cope_tables_decay_under_both_rules():
    """CoPE's per-layer tables (no official counterpart) are weights, not biases or norms."""
    params = _params("cope")
    for rule in ("hf_trainer_4_16", "norms_and_biases"):
        mask = optimizer.decay_mask(params, rule)
        assert [bool(mask[f"block_{n}"]["attention"]["cope_embedding"]) for n in (0, 1)] == [
            True,
            True,
        ]


def test_an_unmapped_parameter_or_rule_is_refused():
    with pytest.raises(ValueError, match="No official parameter name known for block_0/new"):
        optimizer.hf_parameter_name(("block_0", "new", "kernel"))
    with pytest.raises(ValueError, match="Unknown weight_decay_mask 'x'"):
        optimizer.decay_mask({"embedding": jnp.ones(2)}, "x")


def test_the_mask_tests_cover_every_registered_pe():
    # A new PE needs its parameters mapped (hf_parameter_name) and a case above.
    # abacus and coupling's learned table is named like the learned APE's: decoder.wpe.weight.
    covered = {name.removesuffix("_learned") for name in _OFFICIAL_EXTRA} | {
        "fire",
        "kerple",
        "cope",
        "abacus",
        "coupling",
    }
    assert set(positional.names()) == covered
