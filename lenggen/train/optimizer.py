"""AdamW with the paper's schedule (docs/paper.md, "Training") and its weight-decay mask.

Which parameters get weight decay (`train.weight_decay_mask`):

- `hf_trainer_4_16` (the paper's runs): what HF Trainer 4.16.2, which the official code ran,
  applies. Its `create_optimizer` decays every parameter except those of `torch.nn.LayerNorm`
  modules and those whose name contains "bias". In the official T5 decoder that means: T5's
  norm is its own class (`T5LayerNorm`, not an `nn.LayerNorm`), so every `layer_norm.weight`
  and `final_layer_norm.weight` IS decayed; T5's relative-position table is named
  `relative_attention_bias.weight`, so it is NOT decayed. `hf_parameter_name` maps this
  project's parameter paths to the official model's names, and the mask applies the rule to
  those names (this model has no `nn.LayerNorm` counterpart, so only the "bias" test remains).
- `norms_and_biases`: decay everything but normalisation scales and parameters named like
  biases (the usual modern choice; this project's default before it followed the official
  runs). Unlike `hf_trainer_4_16` it spares the RMSNorm scales and decays T5's table.
"""

from collections.abc import Callable, Sequence

import jax
import ml_collections
import optax

PAPER_MASK = "hf_trainer_4_16"


def learning_rate_schedule(train: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup from 0 over `warmup_fraction` of the steps, then linear decay to the end
    learning rate at `num_steps`."""
    warmup_steps = int(round(train.warmup_fraction * train.num_steps))
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, train.learning_rate, max(warmup_steps, 1)),
            optax.linear_schedule(
                train.learning_rate,
                train.end_learning_rate,
                max(train.num_steps - warmup_steps, 1),
            ),
        ],
        boundaries=[warmup_steps],
    )


def _keys(path) -> tuple[str, ...]:
    # Dict keys only: a boxed parameter (nn.Partitioned) adds a `.value` step that names nothing.
    return tuple(str(entry.key) for entry in path if hasattr(entry, "key"))


# This project's block submodules and parameters -> the official CustomT5Block's names.
_BLOCK_NAMES = {
    ("attention_norm", "scale"): "layer.0.layer_norm.weight",
    ("attention", "query"): "layer.0.SelfAttention.q.weight",
    ("attention", "key"): "layer.0.SelfAttention.k.weight",
    ("attention", "value"): "layer.0.SelfAttention.v.weight",
    ("attention", "out"): "layer.0.SelfAttention.o.weight",
    ("ffn_norm", "scale"): "layer.1.layer_norm.weight",
    ("ffn", "wi"): "layer.1.DenseReluDense.wi.weight",
    ("ffn", "wo"): "layer.1.DenseReluDense.wo.weight",
    # CoPE's per-layer table: no official counterpart; the name of the CoPE paper's listing.
    ("attention", "cope_embedding"): "layer.0.SelfAttention.cope.pos_emb",
}
# FIRE has no counterpart in the official code: its parameters keep their own names, under
# which the same rule decays the kernels and scalars and spares `hidden_bias`, `output_bias`.
_FIRE_PARAMS = (
    "c",
    "threshold_multiplier",
    "hidden_kernel",
    "hidden_bias",
    "output_kernel",
    "output_bias",
)


# KERPLE's r1, r2 keep the names of the authors' GPT-NeoX code (bias_p, bias_a), under which
# the same rule spares them, as that code's optimizer groups spare its biases.
_KERPLE_PARAMS = {"r1": "bias_p", "r2": "bias_a"}


def hf_parameter_name(keys: Sequence[str]) -> str:
    """The official PyTorch model's name for the parameter at `keys` of this model's tree.

    `("block_3", "attention", "query")` -> `"decoder.block.3.layer.0.SelfAttention.q.weight"`;
    T5's table (one, shared by all layers) is block 0's `relative_attention_bias`, as in the
    official model, which creates it in the first block only.

    Raises:
      ValueError: a path this mapping does not know (a new parameter must be mapped here, so
        that its weight decay is decided, not guessed).
    """
    keys = tuple(keys)
    if keys == ("embedding",):
        return "shared.weight"  # tied with lm_head, as in the official model
    if keys == ("final_norm", "scale"):
        return "decoder.final_layer_norm.weight"
    if keys == ("pe", "rel_embedding"):
        return "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    if keys == ("pe", "embedding"):
        return "decoder.wpe.weight"  # the learned absolute table
    if len(keys) == 2 and keys[0] == "pe" and keys[1] in _FIRE_PARAMS:
        return f"decoder.fire.{keys[1]}"
    if len(keys) == 2 and keys[0] == "pe" and keys[1] in _KERPLE_PARAMS:
        return f"decoder.kerple.{_KERPLE_PARAMS[keys[1]]}"
    if len(keys) == 3 and keys[0].startswith("block_") and keys[0][6:].isdigit():
        name = _BLOCK_NAMES.get(keys[1:])
        if name is not None:
            return f"decoder.block.{int(keys[0][6:])}.{name}"
    if len(keys) == 4 and keys[:2] == ("blocks", "layer"):  # scanned: all layers in one array
        name = _BLOCK_NAMES.get(keys[2:])
        if name is not None:
            return f"decoder.block.*.{name}"
    raise ValueError(
        f"No official parameter name known for {'/'.join(keys)}: add it to "
        "lenggen.train.optimizer.hf_parameter_name to decide its weight decay."
    )


def _hf_trainer_4_16_decays(keys: tuple[str, ...]) -> bool:
    return "bias" not in hf_parameter_name(keys)


def _norms_and_biases_decays(keys: tuple[str, ...]) -> bool:
    return not any("norm" in key.lower() or "bias" in key.lower() for key in keys)


DECAY_RULES: dict[str, Callable[[tuple[str, ...]], bool]] = {
    "hf_trainer_4_16": _hf_trainer_4_16_decays,
    "norms_and_biases": _norms_and_biases_decays,
}


def decay_mask(params, rule: str = PAPER_MASK):
    """`params`' tree of bools: True where `rule` (a DECAY_RULES name) applies weight decay.

    Raises:
      ValueError: an unknown rule, or (hf_trainer_4_16) a parameter `hf_parameter_name` does
        not know.
    """
    if rule not in DECAY_RULES:
        raise ValueError(
            f"Unknown weight_decay_mask {rule!r}: expected one of {', '.join(DECAY_RULES)}."
        )
    decays = DECAY_RULES[rule]
    return jax.tree_util.tree_map_with_path(lambda path, _: decays(_keys(path)), params)


def make_optimizer(train: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Clipping then AdamW. `train.weight_decay_mask` names the DECAY_RULES entry; a config
    without the key (an older one) gets the paper's, PAPER_MASK."""
    rule = train.get("weight_decay_mask", PAPER_MASK)
    if rule not in DECAY_RULES:
        raise ValueError(
            f"Unknown train.weight_decay_mask {rule!r}: expected one of {', '.join(DECAY_RULES)}."
        )
    return optax.chain(
        optax.clip_by_global_norm(train.grad_clip_norm),
        optax.adamw(
            learning_rate_schedule(train),
            b1=train.adam_b1,
            b2=train.adam_b2,
            eps=train.adam_eps,
            weight_decay=train.weight_decay,
            mask=lambda params: decay_mask(params, rule),
        ),
    )
