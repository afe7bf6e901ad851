r"""The GPU attention kernels compiled for an abstract GPU on this CPU host (no GPU).

  pip install --target /tmp/cudaplug --no-deps jax-cuda12-plugin==0.12.0.1 \
      jax-cuda12-pjrt==0.12.0.1
  PYTHONPATH=/tmp/cudaplug:. JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1 \
      python -m benchmarks.aot_gpu --target_config=h100.txtpb

The CUDA plugin makes a compile-only GPU topology from an XLA GpuTargetConfigProto in text form
(`get_topology_desc(platform='cuda', topology='1x1x1', target_config=TEXT)`); the plugin
library embeds XLA's specs (e.g. `h100_sxm.txtpb`, the `gpu_device_info { ... }` block through
`device_description_str: "NVIDIA H100 80GB HBM3"`). Each kernel is lowered and compiled for it
in bfloat16 at batch 4, 256 tokens, 12 heads of 64, with ALiBi's bias.
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax.experimental import topologies
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lenggen.model.attention import dot_product, pallas_flash
from lenggen.model.positional.base import TileBias

_TARGET = flags.DEFINE_string("target_config", None, "GpuTargetConfigProto text file.")
flags.mark_flag_as_required("target_config")
B, T, H, D = 4, 256, 12, 64


def _alibi(q_positions, k_positions):
    distance = (q_positions[:, :, None] - k_positions[:, None, :]).astype(jnp.float32)
    return -jnp.einsum("h,bqk->bhqk", jnp.linspace(0.5, 0.01, H), distance)


def _alibi_tile(params, q_positions, k_positions):
    """The same bias for one example's tile (`positional.base.TileBias`): `[H, tq, tk]`."""
    (slopes,) = params
    distance = (q_positions[:, None] - k_positions[None, :]).astype(jnp.float32)
    return -slopes[:, None, None] * distance[None]


def main(argv):
    del argv
    with open(_TARGET.value) as file:
        target = file.read()
    devices = topologies.get_topology_desc(
        platform="cuda", topology="1x1x1", target_config=target
    ).devices
    print(f"devices: {devices}")
    mesh = Mesh(np.array(devices), ("data",))
    replicated = NamedSharding(mesh, P())

    def spec(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=replicated)

    args = (spec((B, T, H, D), jnp.bfloat16),) * 3 + (spec((B, T), jnp.int32),) * 2
    args += (spec((B, T), jnp.bool_),)
    kernels = {
        "dot_product (cuDNN tried)": lambda *a: dot_product.attend(*a, _alibi, platform="gpu"),
        "pallas_flash (Triton)": lambda *a: pallas_flash.attend(
            *a,
            _alibi,
            tile_bias=TileBias(_alibi_tile, (jnp.linspace(0.5, 0.01, H),)),
            platform="gpu",
        ),
        "cudnn directly": lambda q, k, v, *_: jax.nn.dot_product_attention(
            q, k, v, implementation="cudnn", is_causal=True
        ),
    }
    for name, kernel in kernels.items():
        try:
            with jax.set_mesh(mesh):
                lowered = jax.jit(kernel).lower(*args)
            compiled = lowered.compile()
            text = compiled.as_text()
            print(
                f"{name}: compiles; temporaries "
                f"{compiled.memory_analysis().temp_size_in_bytes:,} bytes; cuDNN call "
                f"{'cudnn' in text}; Triton {'triton' in text}"
            )
        except Exception as error:  # noqa: BLE001 - the failure is the finding.
            print(f"{name}: FAILS: {type(error).__name__}: {' '.join(str(error).split())[:400]}")


if __name__ == "__main__":
    app.run(main)
