"""The `auto` kernel choice: which kernel to run, from the platform and the key length.

The platform is that of the devices the program is compiled for (the mesh's), which is not
always this process's backend: a CPU host compiles TPU programs for a TPU topology
(lenggen.plan). Resolved at trace time (both are static), so one config runs well everywhere:
  * tpu -> pallas_flash: the bias is computed in the tile, nothing T x T touches HBM.
  * gpu -> dot_product, for every PE: cuDNN flash attention for bfloat16/float16 (XLA for
    float32). pallas_flash's Triton form (the bias in the tile) is one config away
    (`model.attention_impl='pallas_flash'`) but not the default: unlike on a TPU, the GPU has
    a proven fused kernel (cuDNN), while the Triton form is checked on a CPU only (interpret
    mode, Triton lowering), never compiled nor timed on a GPU here. dot_product's cost with a
    biased PE (T5, ALiBi, FIRE) is the materialised `[batch, heads, q_len, k_len]` bias: 6 GiB
    per attention op in bfloat16 at batch 64, 12 heads, 2048 keys, within an 80 GB GPU at the
    paper's sizes; where it is not, choose pallas_flash (or blockwise).
  * cpu -> reference up to CPU_REFERENCE_MAX_KEYS keys, blockwise beyond: the dense kernel is
    as fast or faster on a CPU, but its temporaries grow with q_len x k_len (3.6 GiB per
    attention op at 1024 keys and batch 64, 14 GiB at 2048), while blockwise's stay flat
    (benchmarks/results/attention_memory_t5.md, attention_speed_t5.md).
No PE name enters the choice: every kernel serves every PE.
"""

import jax

BACKENDS = ("cpu", "gpu", "tpu")

# The paper's copy-family test sequences (<= 40 source tokens, so under ~100 tokens) stay on
# the dense kernel; long-length evaluation and long scratchpad outputs go blockwise.
CPU_REFERENCE_MAX_KEYS = 512


def resolve(platform: str | None) -> str:
    """`platform`, or this process's default backend when None; checked against BACKENDS."""
    platform = jax.default_backend() if platform is None else platform
    if platform not in BACKENDS:
        raise ValueError(f"unknown JAX platform {platform!r}; expected one of {BACKENDS}")
    return platform


def choose(backend: str, k_len: int) -> str:
    """The kernel name `auto` stands for on `backend` with `k_len` keys.

    Args:
      backend: the platform the program is compiled for, one of BACKENDS.
      k_len: keys per query (the sequence length, or the KV-cache size when decoding).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown JAX backend {backend!r}; expected one of {BACKENDS}")
    if k_len < 1:
        raise ValueError(f"k_len must be >= 1, got {k_len}")
    if backend == "tpu":
        return "pallas_flash"
    if backend == "gpu":
        return "dot_product"
    return "reference" if k_len <= CPU_REFERENCE_MAX_KEYS else "blockwise"
