"""Distances between attention distributions, as the paper's attention-similarity analysis uses.

For one layer of one example, heads P^h (model A) and Q^h' (model B) each give one distribution
over keys per query. The paper compares the two models by

    D_layer = min over head pairs (h, h') of  mean over queries t of  D(P^h_t, Q^h'_t),

every pair included (same index or not: head numbering is arbitrary across models), then
averages D_layer over layers and examples (attention_similarity.py). D is the Jensen-Shannon
divergence or the symmetric KL divergence, both in nats. Written in jax.numpy so a whole batch
of layers runs jitted (the pairwise tensor is `[heads, heads', queries, keys]` per example).
"""

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

# q (the second argument of KL) is clipped here: a key one distribution ignores entirely would
# otherwise make KL infinite. Softmax attention is positive on every visible key, so the clip
# only matters for underflowed probabilities (and masked keys, where p is 0 too).
KL_FLOOR = 1e-12


def kl_divergence(p: jax.Array, q: jax.Array, axis: int = -1) -> jax.Array:
    """KL(p || q) = sum p log(p / q) along `axis`, with 0 log 0 = 0 and q clipped at KL_FLOOR."""
    p, q = jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32)
    logs = jnp.log(jnp.where(p > 0, p, 1.0)) - jnp.log(jnp.maximum(q, KL_FLOOR))
    return jnp.sum(jnp.where(p > 0, p * logs, 0.0), axis=axis)


def jensen_shannon(p: jax.Array, q: jax.Array, axis: int = -1) -> jax.Array:
    """JSD(p, q) = KL(p || m) / 2 + KL(q || m) / 2, m = (p + q) / 2; in [0, ln 2]."""
    m = (jnp.asarray(p, jnp.float32) + jnp.asarray(q, jnp.float32)) / 2
    return (kl_divergence(p, m, axis) + kl_divergence(q, m, axis)) / 2


def symmetric_kl(p: jax.Array, q: jax.Array, axis: int = -1) -> jax.Array:
    """KL(p || q) + KL(q || p) (Jeffreys' divergence)."""
    return kl_divergence(p, q, axis) + kl_divergence(q, p, axis)


METRICS: dict[str, Callable[..., jax.Array]] = {
    "jsd": jensen_shannon,
    "symmetric_kl": symmetric_kl,
}


def official_jsd(p: jax.Array, q: jax.Array, axis: int = -1) -> jax.Array:
    """The official code's "JSD": KL(m || p) / 2 + KL(m || q) / 2, m = (p + q) / 2.

    Its analyzer computes `0.5 * (KLDivLoss(p.log(), m) + KLDivLoss(q.log(), m))`, and
    `KLDivLoss(input=log p, target=m)` is KL(m || p): the mixture comes first, the reverse of
    the standard JSD (`jensen_shannon`), and the value is not bounded by ln 2.
    """
    m = (jnp.asarray(p, jnp.float32) + jnp.asarray(q, jnp.float32)) / 2
    return (kl_divergence(m, p, axis) + kl_divergence(m, q, axis)) / 2


# The official analysis's metrics under this module's names: its symmetric KL is the standard
# one (KL(q || p) + KL(p || q)); its "jsd" is official_jsd.
OFFICIAL_METRICS: dict[str, Callable[..., jax.Array]] = {
    "jsd": official_jsd,
    "symmetric_kl": symmetric_kl,
}


def head_pair_distances(
    a: jax.Array,
    b: jax.Array,
    query_valid: jax.Array,
    metric: str,
    metrics: Mapping[str, Callable[..., jax.Array]] = METRICS,
) -> jax.Array:
    """Mean over valid queries of the per-query distance, for every pair of heads.

    Args:
      a: `[heads_a, queries, keys]` attention of one layer for one example (rows are
        distributions; masked keys hold 0 in both models).
      b: `[heads_b, queries, keys]`, the same queries and keys.
      query_valid: `[queries]` bool, the real queries (pads excluded from the mean).
      metric: a name in `metrics` (METRICS or OFFICIAL_METRICS).
    Returns:
      `[heads_a, heads_b]` float32.
    """
    if metric not in metrics:
        raise ValueError(f"unknown metric {metric!r}; valid metrics: {tuple(metrics)}")
    if a.shape[1:] != b.shape[1:] or query_valid.shape != a.shape[1:2]:
        raise ValueError(
            f"expected a [heads, queries, keys], b [heads', queries, keys] and query_valid "
            f"[queries] to agree; got {a.shape}, {b.shape} and {query_valid.shape}"
        )
    per_query = metrics[metric](a[:, None], b[None, :], axis=-1)  # -> [heads_a, heads_b, q]
    weights = query_valid.astype(jnp.float32)
    return jnp.einsum("hgq,q->hg", per_query, weights) / jnp.maximum(weights.sum(), 1.0)


def layer_distance(a: jax.Array, b: jax.Array, query_valid: jax.Array, metric: str) -> jax.Array:
    """The paper's per-layer distance: the minimum over head pairs of `head_pair_distances`."""
    return head_pair_distances(a, b, query_valid, metric).min()


@jax.jit
def batch_layer_distances(a: jax.Array, b: jax.Array, valid: jax.Array) -> dict[str, jax.Array]:
    """`layer_distance` for every example of a batch and every metric.

    Args:
      a: `[batch, heads_a, length, length]` one layer's attention.
      b: `[batch, heads_b, length, length]`.
      valid: `[batch, length]` bool.
    Returns:
      metric name -> `[batch]` float32.
    """

    def one(example):
        a_i, b_i, valid_i = example
        return {m: layer_distance(a_i, b_i, valid_i, m) for m in METRICS}

    # One example at a time: the pairwise tensor stays [heads, heads', length, length].
    return jax.lax.map(one, (a, b, valid))


def official_layer_distance(
    reference: jax.Array, other: jax.Array, query_valid: jax.Array, metric: str
) -> jax.Array:
    """The official analysis's per-layer distance: the minimum, over head pairs (other's head
    i, the reference's head j) with i < j only (`itertools.combinations(heads, 2)`: no
    same-index pair, one direction), of the mean over queries of OFFICIAL_METRICS[metric].

    Args:
      reference: `[heads, queries, keys]`, the NoPE run's attention (the official "target").
      other: `[heads, queries, keys]`, the compared run's, the same number of heads.
      query_valid, metric: as `head_pair_distances` (metric from OFFICIAL_METRICS).
    """
    if reference.shape[0] != other.shape[0] or reference.shape[0] < 2:
        raise ValueError(
            f"the official head pairs i < j need two models with the same number (>= 2) of "
            f"heads; got {reference.shape[0]} and {other.shape[0]}"
        )
    distances = head_pair_distances(reference, other, query_valid, metric, OFFICIAL_METRICS)
    heads = distances.shape[0]
    # distances[j, i]: reference head j, other head i; keep i < j, the strict lower triangle.
    pairs = jnp.tril(jnp.ones((heads, heads), bool), k=-1)
    return jnp.min(jnp.where(pairs, distances, jnp.inf))


@jax.jit
def batch_official_layer_distances(
    reference: jax.Array, other: jax.Array, valid: jax.Array
) -> dict[str, jax.Array]:
    """`official_layer_distance` for every example of a batch and every OFFICIAL_METRICS
    metric; arguments and result as `batch_layer_distances`."""

    def one(example):
        a_i, b_i, valid_i = example
        return {m: official_layer_distance(a_i, b_i, valid_i, m) for m in OFFICIAL_METRICS}

    return jax.lax.map(one, (reference, other, valid))
