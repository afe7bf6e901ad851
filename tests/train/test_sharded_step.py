"""A train step on a (2, 2) data x model mesh of fake CPU devices equals the 1-device step, and
parameters are laid out as their partition specs say."""

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from lenggen import config_schema, sharding
from lenggen.model import decoder
from lenggen.train import optimizer as optimizer_lib
from lenggen.train import state as state_lib

SEQ_LEN = 16
BATCH = 8
VOCAB = 12


def _model() -> decoder.Decoder:
    return decoder.Decoder(
        vocab_size=VOCAB,
        num_layers=2,
        d_model=16,
        num_heads=2,
        d_kv=8,
        d_ff=32,
        dropout_rate=0.1,
        pe=config_schema.pe_section("t5"),
    )


def _train_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
            num_steps=10,
            learning_rate=1e-2,
            end_learning_rate=1e-4,
            warmup_fraction=0.1,
            weight_decay=0.05,
            adam_b1=0.9,
            adam_b2=0.999,
            adam_eps=1e-8,
            grad_clip_norm=1.0,
        )
    )


def _batch(step: int) -> dict:
    rng = np.random.default_rng(step)
    lengths = rng.integers(6, SEQ_LEN + 1, size=BATCH)
    position = np.arange(SEQ_LEN)[None]
    valid = position < lengths[:, None]
    tokens = np.where(valid, rng.integers(2, VOCAB, size=(BATCH, SEQ_LEN)), 0).astype(np.int32)
    loss_mask = (valid & (position >= 3)).astype(np.float32)
    return dict(
        tokens=tokens,
        positions=np.broadcast_to(position, (BATCH, SEQ_LEN)).astype(np.int32),
        valid=valid,
        loss_mask=loss_mask,
    )


def _train(mesh_shape, devices, num_steps=3):
    mesh = sharding.make_mesh(mesh_shape, devices)
    model, train_config = _model(), _train_config()
    tx = optimizer_lib.make_optimizer(train_config)
    schedule = optimizer_lib.learning_rate_schedule(train_config)
    layout = state_lib.layout(model, tx, mesh, SEQ_LEN)
    state = state_lib.initial_state(model, tx, layout, SEQ_LEN, jax.random.key(0))
    train_step = state_lib.jit_train_step(model, tx, schedule, layout, mesh)
    losses = []
    for step in range(num_steps):
        batch = jax.device_put(_batch(step), sharding.batch_sharding(mesh))
        state, metrics = train_step(state, batch, jax.random.key(1))
        losses.append(float(metrics["loss"]))
    return state, losses, layout


@pytest.fixture(scope="module")
def runs():
    assert jax.device_count() >= 4, "tests/conftest.py asks for 4 fake CPU devices"
    single = _train((1, 1), jax.devices()[:1])
    sharded = _train((2, 2), jax.devices()[:4])
    return single, sharded


def test_sharded_losses_and_params_equal_single_device(runs):
    (single_state, single_losses, _), (sharded_state, sharded_losses, _) = runs
    np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-5)
    assert len(set(single_losses)) == 3  # the model really moves
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6),
        single_state["params"],
        sharded_state["params"],
    )
    assert int(sharded_state["step"]) == 3


def test_params_are_sharded_as_their_partition_specs_say(runs):
    _, (state, _, layout) = runs
    params = state["params"]
    attention = params["block_0"]["attention"]
    expected = {
        "query": P(None, "model", None),  # [embed, heads, kv]: heads split over model
        "out": P("model", None, None),  # [heads, kv, embed]
    }
    for name, spec in expected.items():
        leaf = attention[name]
        assert leaf.sharding.spec == spec, name
        # Each of the 4 devices holds half of the heads (model axis = 2), all of the rest.
        shard_shape = leaf.addressable_shards[0].data.shape
        heads_axis = list(spec).index("model")
        assert shard_shape[heads_axis] == leaf.shape[heads_axis] // 2
    assert params["embedding"].sharding.spec == P("model", None)  # vocab 12 over 2
    assert params["final_norm"]["scale"].sharding.spec == P(None)
    assert params["pe"]["rel_embedding"].sharding.spec == P(None, "model")  # [buckets, heads]
    # Adam's moments follow their params; the step counter is replicated.
    adam = [
        x
        for x in jax.tree.leaves(state["opt_state"], is_leaf=lambda x: hasattr(x, "mu"))
        if hasattr(x, "mu")
    ]
    assert len(adam) == 1
    assert adam[0].mu["block_0"]["attention"]["query"].sharding.spec == P(None, "model", None)
    assert adam[0].nu["embedding"].sharding.spec == P("model", None)
    assert state["step"].sharding.spec == P()


def test_a_dimension_the_model_axis_does_not_divide_is_replicated():
    mesh = sharding.make_mesh((1, 2), jax.devices()[:2])
    model = decoder.Decoder(
        vocab_size=13,
        num_layers=1,
        d_model=8,
        num_heads=2,
        d_kv=4,
        d_ff=16,
        dropout_rate=0.0,
        pe=config_schema.pe_section("nope"),
    )
    tx = optimizer_lib.make_optimizer(_train_config())
    layout = state_lib.layout(model, tx, mesh, 8)
    assert layout.param_sharding["embedding"].spec == P(None, None)  # 13 % 2 != 0
    assert layout.param_sharding["block_0"]["ffn"]["wi"].spec == P(None, "model")
