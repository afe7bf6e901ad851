"""The program is built for the platform it is compiled for, not this host's backend.

A CPU host compiling for a TPU must get the TPU kernels: `auto` picks pallas_flash, pallas_flash
compiles (no interpret mode) in its Mosaic form, and the decoder passes its platform down; the
matmul precision (config.model.precision) reaches every dot of the model and its gradient.
Lowering only here (cheap); test_compile.py runs the TPU compiler.
"""

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from lenggen import aot, sharding
from lenggen.model import attention, decoder
from lenggen.model.attention import auto, dot_product, pallas_flash, pallas_gpu

B, T, H, D = 2, 8, 3, 8


def _inputs():
    q = jnp.ones((B, T, H, D), jnp.float32)
    positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    return q, q, q, positions, positions, jnp.ones((B, T), bool)


def _recorder(calls, name):
    def kernel(*args, **kwargs):
        calls.append((name, kwargs))
        return args[0]

    return kernel


@pytest.mark.parametrize(
    ("platform", "expected"),
    [("tpu", "pallas_flash"), ("gpu", "dot_product"), ("cpu", "reference")],
)
def test_auto_follows_the_platform_given(monkeypatch, platform, expected):
    """On this CPU host, `auto` built for a TPU (GPU) runs the TPU (GPU) choice, and passes the
    platform on to it."""
    calls = []
    for name in ("reference", "dot_product", "pallas_flash"):
        monkeypatch.setitem(attention._KERNELS, name, _recorder(calls, name))
    attention.get("auto", platform)(*_inputs(), None)
    assert [name for name, _ in calls] == [expected]
    if expected != "reference":  # platform-independent kernels take no platform argument
        assert calls[0][1]["platform"] == platform


def test_unknown_platform_is_rejected():
    with pytest.raises(ValueError, match=r"unknown JAX platform 'metal'; expected one of"):
        attention.get("auto", "metal")


@pytest.mark.parametrize(
    ("platform", "form", "interpret"),
    [("tpu", "tpu", False), ("gpu", "gpu", False), ("cpu", "tpu", True), (None, "tpu", True)],
)
def test_pallas_flash_form_and_interpret_follow_the_platform(
    monkeypatch, platform, form, interpret
):
    """Mosaic (compiled) for a TPU, Triton for a GPU, the interpreter only for a CPU (None: this
    host, a CPU)."""
    calls = []
    for module, name, form_name in (
        (pallas_flash, "_forward", "tpu"),
        (pallas_gpu, "forward", "gpu"),
    ):
        monkeypatch.setattr(
            module, name, lambda *a, f=form_name, **kw: calls.append((f, kw)) or a[0]
        )
    pallas_flash.attend(*_inputs(), lambda q_positions, k_positions: None, platform=platform)
    assert [(name, kw["interpret"]) for name, kw in calls] == [(form, interpret)]


def test_dot_product_tries_cudnn_only_for_a_gpu():
    assert dot_product.implementation(auto.resolve("gpu"), jnp.bfloat16) == "cudnn"
    assert dot_product.implementation(auto.resolve("tpu"), jnp.bfloat16) == "xla"
    assert dot_product.implementation(auto.resolve("gpu"), jnp.float32) == "xla"


def _model(platform, precision="highest", impl="auto"):
    pe = ml_collections.ConfigDict(dict(name="alibi"))
    return decoder.Decoder(
        vocab_size=11,
        num_layers=1,
        d_model=16,
        num_heads=2,
        d_kv=8,
        d_ff=32,
        dropout_rate=0.0,
        pe=pe,
        attention_impl=impl,
        precision=precision,
        platform=platform,
    )


def _apply_args(length=128):
    tokens = jax.ShapeDtypeStruct((1, length), jnp.int32)
    return tokens, tokens, jax.ShapeDtypeStruct((1, length), jnp.bool_)


def _exported_text(model, platform: str) -> str:
    params = jax.eval_shape(model.init, jax.random.key(0), *_apply_args())["params"]
    fn = jax.jit(lambda p, *a: model.apply({"params": p}, *a))
    return jax.export.export(fn, platforms=[platform])(params, *_apply_args()).mlir_module()


def test_decoder_built_for_a_tpu_lowers_the_mosaic_kernel():
    """The same config: built for a TPU, its attention is a Mosaic kernel; built for this host,
    it is not (the reference kernel)."""
    assert aot.MOSAIC_CALL.split('"')[1] in _exported_text(_model("tpu"), "tpu")
    assert aot.MOSAIC_CALL.split('"')[1] not in _exported_text(_model(None), "tpu")


def _dot_precisions(jaxpr) -> list:
    """The `precision` parameter of every dot_general in `jaxpr`, sub-jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn.params["precision"])
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    sub = sub.jaxpr
                if isinstance(sub, jax.extend.core.Jaxpr):
                    found.extend(_dot_precisions(sub))
    return found


@pytest.mark.parametrize(
    ("precision", "expected"),
    [
        ("highest", jax.lax.Precision.HIGHEST),
        ("high", jax.lax.Precision.HIGH),
        ("default", jax.lax.Precision.DEFAULT),
    ],
)
def test_precision_reaches_every_dot_and_its_gradient(precision, expected):
    """Forward and backward: every dot of a train-style gradient carries the config's
    precision ('default': the platform's, one bfloat16 pass on a TPU)."""
    model = _model(None, precision, impl="blockwise")
    tokens = jnp.zeros((2, 6), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(6, dtype=jnp.int32), (2, 6))
    valid = jnp.ones((2, 6), bool)
    params = model.init(jax.random.key(0), tokens, positions, valid)["params"]

    def loss(p):
        return model.apply({"params": p}, tokens, positions, valid).sum()

    precisions = _dot_precisions(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
    assert len(precisions) >= 10  # q, k, v, o, ffn in/out, logits, attention; and transposes
    assert set(precisions) == {(expected, expected)}


def test_memory_stats_of_an_abstract_mesh_are_empty():
    """A mesh of TPU topology devices reports no memory (none is addressable here): the run's
    budget check then relies on config.train.max_bytes_per_device, the plan on lenggen.chips."""
    mesh = sharding.make_mesh((2, 2), aot.topology("v5e:2x2").devices)
    assert sharding.platform(mesh) == "tpu"
    assert sharding.device_memory_stats(mesh) == {}


def test_topologies():
    """Device counts, hosts and devices per chip of the abstract slices the plan compiles for:
    one device per chip, as a TPU VM's JAX sees it (v4 and v5p in megacore mode)."""
    found = {
        name: (len(t.devices), t.hosts, t.devices_per_chip, t.chip.name)
        for name in ("v5e:2x2", "v5e:4x4", "v4:2x2x1", "v4:2x2x2", "v5p:2x2x1")
        for t in [aot.topology(name)]
    }
    assert found == {
        "v5e:2x2": (4, 1, 1, "v5e"),
        "v5e:4x4": (16, 4, 1, "v5e"),
        "v4:2x2x1": (4, 1, 1, "v4"),
        "v4:2x2x2": (8, 2, 1, "v4"),
        "v5p:2x2x1": (4, 1, 1, "v5p"),
    }
    # jax.make_mesh takes them (it refuses a v4 mesh holding each TensorCore separately).
    for name in ("v4:2x2x2", "v5p:2x2x1"):
        mesh = sharding.make_mesh((-1, 2), aot.topology(name).devices)
        assert mesh.shape["model"] == 2 and sharding.platform(mesh) == "tpu"
    local = aot.topology("cpu")
    assert local.chip is None and local.devices == tuple(jax.devices())


@pytest.mark.parametrize("name", ["v5e", "v9:2x2", "v5e:2x2x2x2", "tpu:2x2", "v3:2x2"])
def test_bad_topology(name):
    with pytest.raises(ValueError, match=f"unknown topology '{name}'") as raised:
        aot.topology(name)
    assert "\n" not in str(raised.value)
