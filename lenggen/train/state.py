"""The train state `{step, params, opt_state}`: its layout on the mesh and its initialisation.

The state is a plain dict (big_vision's habit): Orbax saves it as is, and its shardings are a
tree of the same shape, derived from the logical partition names the model puts on its params.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from lenggen import sharding
from lenggen.train import step as step_lib


@dataclasses.dataclass(frozen=True)
class StateLayout:
    """Shapes and shardings of the train state for one (model, optimizer, mesh)."""

    abstract: dict  # jax.ShapeDtypeStruct leaves (no shardings).
    sharding: dict  # NamedSharding leaves, same tree.
    param_sharding: Any  # NamedSharding leaves, the tree of params.

    def restore_target(self) -> dict:
        """ShapeDtypeStructs carrying the shardings: what Orbax restores onto."""
        return jax.tree.map(
            lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
            self.abstract,
            self.sharding,
        )


def _example_inputs(seq_len: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    tokens = jnp.zeros((1, seq_len), jnp.int32)
    positions = jnp.arange(seq_len, dtype=jnp.int32)[None]
    return tokens, positions, jnp.ones((1, seq_len), bool)


def _boxed_params(model: nn.Module, seq_len: int, key: jax.Array) -> Any:
    return model.init({"params": key}, *_example_inputs(seq_len))["params"]


def _fresh_state(
    model: nn.Module, optimizer: optax.GradientTransformation, seq_len: int, key: jax.Array
) -> dict:
    params = nn.unbox(_boxed_params(model, seq_len, key))
    return dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def layout(
    model: nn.Module, optimizer: optax.GradientTransformation, mesh: Mesh, seq_len: int
) -> StateLayout:
    """Derives the state's shapes and shardings without allocating it (jax.eval_shape)."""
    key = jax.random.key(0)
    boxed = jax.eval_shape(functools.partial(_boxed_params, model, seq_len), key)
    param_sharding = sharding.param_shardings(boxed, mesh)
    abstract = jax.eval_shape(functools.partial(_fresh_state, model, optimizer, seq_len), key)
    return StateLayout(
        abstract=abstract,
        sharding=sharding.state_shardings(abstract, param_sharding, mesh),
        param_sharding=param_sharding,
    )


def initial_state(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    state_layout: StateLayout,
    seq_len: int,
    key: jax.Array,
) -> dict:
    """A fresh state, created directly in its sharded layout (never whole on one device)."""
    init = functools.partial(_fresh_state, model, optimizer, seq_len)
    return jax.jit(init, out_shardings=state_layout.sharding)(key)


def jit_train_step(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    state_layout: StateLayout,
    mesh: Mesh,
):
    """`(state, batch, dropout_key) -> (state, metrics)`, jitted with explicit shardings; the
    incoming state is donated."""
    return jax.jit(
        functools.partial(step_lib.train_step, model=model, optimizer=optimizer, schedule=schedule),
        in_shardings=(
            state_layout.sharding,
            sharding.batch_sharding(mesh),
            sharding.replicated(mesh),
        ),
        out_shardings=(state_layout.sharding, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )
