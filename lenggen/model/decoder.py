"""A decoder-only stack of T5 blocks with a pluggable positional encoding.

The paper's "base" model (docs/paper.md, "Model"): 12 layers, d_model 768, 12 heads, d_kv 64,
d_ff 3072; pre-norm RMSNorm (eps 1e-6), no biases anywhere, ReLU feed-forward, dropout 0.1 (HF
T5 placement), final RMSNorm, embeddings tied with the output layer and logits scaled by
d_model^-0.5; attention logits are not divided by sqrt(d_kv). Init follows HF T5's
`_init_weights` (docs/paper.md: unconfirmed for the official repo): embedding N(0, 1); q N(0,
(d_model*d_kv)^-1/2); k, v N(0, d_model^-1/2); o N(0, (heads*d_kv)^-1/2); ffn-in N(0,
d_model^-1/2); ffn-out N(0, d_ff^-1/2); norm scale 1.

Built from the smallest piece up: RMSNorm, Attention, FeedForward, Block, Decoder. Parameters
carry logical axis names (`nn.with_logical_partitioning`); the sharding code maps them to mesh
axes. Parameters are float32; `dtype` is the compute dtype; `precision` is the precision of
every matmul (einsum, dot, inside the attention kernels too), as `jax.default_matmul_precision`
names it: on a TPU a float32 matmul runs as one bfloat16 pass unless asked otherwise, while the
paper trained in full float32 ('highest', the default; about 6 bfloat16 passes on the MXU).

`scan_layers=True` runs the blocks as one `nn.scan` (the same function, with every block's
parameters stacked on a leading 'layers' axis, `params['blocks']['layer']`): the compiled
program holds one block instead of `num_layers` copies, so compile time no longer grows with
depth (what a TPU run wants). Given the same weights (`stack_layers`), it computes the same
outputs and gradients; dropout draws differ (each layer's rng is split from the scan's, not
named after the block), and the KV cache is stacked the same way.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lenggen import config_defaults
from lenggen.model import attention, digit_runs, kv_cache, positional
from lenggen.model.attention import reference
from lenggen.model.positional.base import PositionalEncoding

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# config.model.precision -> jax.default_matmul_precision's name. 'highest': full float32 (the
# paper's fp32 training); 'high': bfloat16_3x; 'default': one bfloat16 pass on a TPU.
PRECISIONS = {"highest": "highest", "high": "high", "default": "default"}
CONFIG_FIELDS = (
    "num_layers",
    "d_model",
    "num_heads",
    "d_kv",
    "d_ff",
    "dropout_rate",
    "dtype",
    "precision",
    "attention_impl",
    "pe",
    "scan_layers",
)
# Keys a run's config.json may lack (written before the key existed) -> the value those runs
# used.
CONFIG_DEFAULTS = config_defaults.MODEL
# The scanned stack's module names: params["blocks"]["layer"] holds the stacked blocks.
SCAN_NAME, SCAN_LAYER_NAME = "blocks", "layer"


def _param(module: nn.Module, name: str, stddev: float, shape: tuple, axes: tuple) -> jax.Array:
    """A float32 N(0, stddev) parameter with logical axis names."""
    init = nn.with_logical_partitioning(nn.initializers.normal(stddev), axes)
    return module.param(name, init, shape)


class RMSNorm(nn.Module):
    """T5 layer norm: x / sqrt(mean(x^2) + eps) * scale; no centring, no bias; fp32 statistics."""

    dtype: jnp.dtype = jnp.float32
    eps: float = 1e-6

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """`[batch, length, d_model]` -> same shape, `dtype`."""
        init = nn.with_logical_partitioning(nn.initializers.ones, ("embed",))
        scale = self.param("scale", init, (x.shape[-1],))
        x = x.astype(jnp.float32)
        x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.eps)
        return (x * scale).astype(self.dtype)


class Attention(nn.Module):
    """Multi-head self-attention; the PE acts through its `rotate`, `bias` and
    `contextual_logits` hooks only (the last one's parameters are created here, per layer).

    With `decode=True`, keys (rotated), values, positions and valid flags go to the KV cache
    (kv_cache.py) and the queries attend over the whole cache. When the 'intermediates'
    collection is mutable, the attention probabilities `[batch, heads, q_len, k_len]` are sown
    as 'attention_weights' (computed by the reference kernel, before dropout) for analysis.
    """

    num_heads: int
    d_kv: int
    dropout_rate: float
    pe: PositionalEncoding
    attention_impl: str
    dtype: jnp.dtype
    platform: str | None = None

    @nn.compact
    def __call__(self, x, positions, valid, deterministic: bool, decode: bool) -> jax.Array:
        """`x [batch, length, d_model]`, `positions`/`valid [batch, length]` -> like `x`."""
        d_model, heads, d_kv = x.shape[-1], self.num_heads, self.d_kv
        axes_in, axes_out = ("embed", "heads", "kv"), ("heads", "kv", "embed")
        w_q = _param(self, "query", (d_model * d_kv) ** -0.5, (d_model, heads, d_kv), axes_in)
        w_k = _param(self, "key", d_model**-0.5, (d_model, heads, d_kv), axes_in)
        w_v = _param(self, "value", d_model**-0.5, (d_model, heads, d_kv), axes_in)
        w_o = _param(self, "out", (heads * d_kv) ** -0.5, (heads, d_kv, d_model), axes_out)

        q = jnp.einsum("btd,dhk->bthk", x, w_q.astype(self.dtype))  # -> [b, t, heads, d_kv]
        k = jnp.einsum("btd,dhk->bthk", x, w_k.astype(self.dtype))
        v = jnp.einsum("btd,dhk->bthk", x, w_v.astype(self.dtype))
        q, k = self.pe.rotate(q, positions), self.pe.rotate(k, positions)

        k_positions, k_valid = positions, valid
        if decode:
            k, v, k_positions, k_valid = kv_cache.update(self, k, v, positions, valid)
        contextual = self.pe.contextual_logits(d_kv)
        if contextual is not None:  # its parameters are this layer's own
            contextual = contextual.with_params(
                tuple(
                    self.param(
                        spec.name, nn.with_logical_partitioning(spec.init, spec.axes), spec.shape
                    )
                    for spec in contextual.specs
                )
            )
        if self.is_mutable_collection("intermediates"):
            weights = reference.attention_weights(
                q, k, positions, k_positions, k_valid, self.pe.bias, contextual
            )
            self.sow("intermediates", "attention_weights", weights)

        use_dropout = not deterministic and self.dropout_rate > 0.0
        out = attention.get(self.attention_impl, self.platform)(
            q,
            k,
            v,
            positions,
            k_positions,
            k_valid,
            self.pe.bias,
            tile_bias=self.pe.tile_bias(),
            contextual=contextual,
            dropout_rate=self.dropout_rate,
            dropout_rng=self.make_rng("dropout") if use_dropout else None,
        )
        return jnp.einsum("bthk,hkd->btd", out, w_o.astype(self.dtype))


class FeedForward(nn.Module):
    """T5 DenseReluDense: ReLU(x W_in), dropout, then W_out; no biases."""

    d_ff: int
    dropout_rate: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        """`[batch, length, d_model]` -> same shape."""
        d_model = x.shape[-1]
        w_in = _param(self, "wi", d_model**-0.5, (d_model, self.d_ff), ("embed", "mlp"))
        w_out = _param(self, "wo", self.d_ff**-0.5, (self.d_ff, d_model), ("mlp", "embed"))
        h = jax.nn.relu(jnp.einsum("btd,df->btf", x, w_in.astype(self.dtype)))
        h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        return jnp.einsum("btf,fd->btd", h, w_out.astype(self.dtype))


class Block(nn.Module):
    """Pre-norm T5 block: x + Dropout(Attention(Norm(x))), then h + Dropout(FFN(Norm(h)))."""

    num_heads: int
    d_kv: int
    d_ff: int
    dropout_rate: float
    pe: PositionalEncoding
    attention_impl: str
    dtype: jnp.dtype
    platform: str | None = None

    @nn.compact
    def __call__(self, x, positions, valid, deterministic: bool, decode: bool) -> jax.Array:
        """`x [batch, length, d_model]` -> same shape."""
        dropout = nn.Dropout(self.dropout_rate)
        h = RMSNorm(self.dtype, name="attention_norm")(x)
        h = Attention(
            self.num_heads,
            self.d_kv,
            self.dropout_rate,
            self.pe,
            self.attention_impl,
            self.dtype,
            self.platform,
            name="attention",
        )(h, positions, valid, deterministic, decode)
        x = x + dropout(h, deterministic=deterministic)
        h = RMSNorm(self.dtype, name="ffn_norm")(x)
        h = FeedForward(self.d_ff, self.dropout_rate, self.dtype, name="ffn")(h, deterministic)
        return x + dropout(h, deterministic=deterministic)


class _ScanStep(nn.Module):
    """`nn.scan`'s body: one Block, carry `x`. The PE's variables come in as a broadcast
    argument and are bound to a fresh PE module here: a module of the enclosing scope cannot
    be shared into a scan (the scan would slice its parameters along the layer axis)."""

    block: dict  # Block's fields but `pe`
    pe: PositionalEncoding  # unbound; bound to `pe_variables` on each call
    deterministic: bool
    decode: bool

    @nn.compact
    def __call__(self, x, positions, valid, pe_variables):
        """`x [batch, length, d_model]` -> (same shape, None)."""
        pe = self.pe.bind(pe_variables)
        block = Block(**self.block, pe=pe, name=SCAN_LAYER_NAME)
        return block(x, positions, valid, self.deterministic, self.decode), None


def stack_layers(params: dict, num_layers: int) -> dict:
    """Unrolled parameters (`block_0` ... `block_{L-1}`) -> the scanned layout
    (`blocks/layer/...` stacked on a leading axis); every other entry unchanged. Works on any
    tree of the parameters' structure (gradients, optimizer moments)."""
    names = [f"block_{i}" for i in range(num_layers)]
    missing = [n for n in names if n not in params]
    if missing or f"block_{num_layers}" in params:
        raise ValueError(f"expected blocks block_0..block_{num_layers - 1}; missing {missing}")
    out = {k: v for k, v in params.items() if k not in names}
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[params[n] for n in names])
    out[SCAN_NAME] = {SCAN_LAYER_NAME: stacked}
    return out


def unstack_layers(params: dict) -> dict:
    """The inverse of `stack_layers`: `blocks/layer/...` -> `block_0` ... `block_{L-1}`."""
    out = {k: v for k, v in params.items() if k != SCAN_NAME}
    stacked = params[SCAN_NAME][SCAN_LAYER_NAME]
    num_layers = jax.tree.leaves(stacked)[0].shape[0]
    for i in range(num_layers):
        out[f"block_{i}"] = jax.tree.map(lambda leaf, i=i: leaf[i], stacked)
    return out


def layer_intermediates(intermediates: dict, num_layers: int, name: str) -> list:
    """Per layer, the attention module's sown value `name` (e.g. 'attention_weights'), for
    either layout: `block_{i}/attention/name` or the scanned `blocks/layer/attention/name`
    stacked on a leading layer axis."""
    if SCAN_NAME in intermediates:
        (stacked,) = intermediates[SCAN_NAME][SCAN_LAYER_NAME]["attention"][name]
        return [stacked[i] for i in range(num_layers)]
    return [intermediates[f"block_{i}"]["attention"][name][0] for i in range(num_layers)]


class Decoder(nn.Module):
    """The decoder-only language model.

    Attributes:
      vocab_size, num_layers, d_model, num_heads, d_kv, d_ff: sizes (docs/paper.md "Model").
      dropout_rate: HF T5 placement: embedding output, attention probabilities, FFN hidden
        after ReLU, each sublayer output before the residual add, final norm output.
      pe: the PE config (see `positional`); stored frozen so the module is hashable (a static
        argument of jax.jit, as in decoding.py).
      attention_impl: a kernel name from `attention.names()`.
      dtype: compute dtype name, one of DTYPES; parameters stay float32, logits are float32.
      precision: matmul precision, one of PRECISIONS (module docstring).
      platform: the platform the program is compiled for ('cpu', 'gpu', 'tpu': the mesh's
        devices'), which picks the attention kernel's form; None: this process's backend.
      digit_ids: the token ids of the digits 0-9 (`Tokenizer.digit_ids`), read only by a PE
        whose `embed_input` is "digit_runs" (abacus, coupling).
      scan_layers: run the blocks as one `nn.scan` (module docstring); parameters and cache
        then live under `blocks/layer` with a leading layer axis.
      scan_unroll: layers per iteration of the scanned loop (the same function; lenggen.plan
        compiles a second unroll to count FLOPs, as XLA's cost analysis counts a loop body
        once whatever its trip count).
    """

    vocab_size: int
    num_layers: int
    d_model: int
    num_heads: int
    d_kv: int
    d_ff: int
    dropout_rate: float
    pe: ml_collections.ConfigDict
    attention_impl: str = "reference"
    dtype: str = "float32"
    precision: str = "highest"
    platform: str | None = None
    digit_ids: tuple[int, ...] = ()
    scan_layers: bool = False
    scan_unroll: int = 1

    def __post_init__(self):
        if not isinstance(self.pe, ml_collections.FrozenConfigDict):
            object.__setattr__(self, "pe", ml_collections.FrozenConfigDict(self.pe))
        for field in ("vocab_size", "num_layers", "d_model", "num_heads", "d_kv", "d_ff"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        reference.check_dropout_rate(self.dropout_rate)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {tuple(PRECISIONS)}, got {self.precision!r}"
            )
        if not isinstance(self.scan_layers, bool):
            raise ValueError(f"scan_layers must be True or False, got {self.scan_layers!r}")
        attention.get(self.attention_impl, self.platform)  # raises on an unknown kernel
        positional.get(self.pe["name"])  # raises on an unknown PE
        super().__post_init__()

    @classmethod
    def from_config(
        cls,
        model_config: ml_collections.ConfigDict,
        vocab_size: int,
        platform: str | None = None,
        digit_ids: tuple[int, ...] = (),
        scan_unroll: int = 1,
    ) -> "Decoder":
        """A Decoder from `config.model`, which has exactly the fields of CONFIG_FIELDS,
        compiled for `platform` (the mesh's devices'; None: this process's backend), with the
        task's `digit_ids` (`Tokenizer.digit_ids`)."""
        keys = set(model_config.keys())
        values = {key: model_config[key] for key in keys}
        for key, value in CONFIG_DEFAULTS.items():
            if key not in keys:
                # A run's config.json from before the key existed (e.g. precision: those
                # trained at full float32, the CPU's only matmul precision).
                keys.add(key)
                values[key] = value
        missing, unknown = sorted(set(CONFIG_FIELDS) - keys), sorted(keys - set(CONFIG_FIELDS))
        if missing or unknown:
            raise ValueError(
                f"model config must have exactly the fields {sorted(CONFIG_FIELDS)}; "
                f"missing {missing}, unknown {unknown}"
            )
        return cls(
            vocab_size=vocab_size,
            platform=platform,
            digit_ids=tuple(digit_ids),
            scan_unroll=scan_unroll,
            **{field: values[field] for field in CONFIG_FIELDS},
        )

    @nn.compact
    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        valid: jax.Array,
        *,
        deterministic: bool = True,
        decode: bool = False,
    ) -> jax.Array:
        """Next-token logits.

        Args:
          tokens: `[batch, length]` int32.
          positions: `[batch, length]` int32, explicit (e.g. cumsum(valid) - 1).
          valid: `[batch, length]` bool, False on padding (never attended to as a key).
          deterministic: False enables dropout (needs the 'dropout' rng).
          decode: use and extend the KV cache ('cache' collection, see kv_cache.py).
        Returns:
          `[batch, length, vocab_size]` float32; rows of invalid tokens are meaningless.
        """
        # Trace-time setting: every dot below (and its gradient's) carries this precision.
        with jax.default_matmul_precision(PRECISIONS[self.precision]):
            dtype = DTYPES[self.dtype]
            embedding = _param(
                self, "embedding", 1.0, (self.vocab_size, self.d_model), ("vocab", "embed")
            )
            # One PE module for the whole stack: T5's table is shared by all layers (docs/paper.md).
            pe = positional.build(self.pe, self.num_heads, self.d_model, name="pe")
            # Create the PE's parameters here, outside any kernel: a blockwise kernel may call
            # the bias hook inside lax.scan, where Linen cannot create variables.
            pe.bias(positions[:, :1], positions[:, :1])

            x = jnp.take(embedding, tokens, axis=0).astype(dtype)  # -> [batch, len, d_model]
            x = pe.embed(x, self._embed_input(pe, tokens, positions, valid, decode))
            x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
            block = dict(
                num_heads=self.num_heads,
                d_kv=self.d_kv,
                d_ff=self.d_ff,
                dropout_rate=self.dropout_rate,
                attention_impl=self.attention_impl,
                dtype=dtype,
                platform=self.platform,
            )
            if self.scan_layers:
                stack = nn.scan(
                    _ScanStep,
                    variable_axes={"params": 0, "cache": 0, "intermediates": 0},
                    split_rngs={"params": True, "dropout": True},
                    in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
                    length=self.num_layers,
                    unroll=self.scan_unroll,
                    metadata_params={nn.PARTITION_NAME: "layers"},
                )
                x, _ = stack(block, pe.clone(parent=None), deterministic, decode, name=SCAN_NAME)(
                    x, positions, valid, pe.variables
                )
            else:
                for layer in range(self.num_layers):
                    x = Block(**block, pe=pe, name=f"block_{layer}")(
                        x, positions, valid, deterministic, decode
                    )
            x = RMSNorm(dtype, name="final_norm")(x)
            x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
            # Tied output layer; Mesh-TF / HF T5 rescale by d_model^-0.5 before projecting.
            x = x * self.d_model**-0.5
            return jnp.einsum(
                "btd,vd->btv", x, embedding.astype(dtype), preferred_element_type=jnp.float32
            )

    def _embed_input(self, pe, tokens, positions, valid, decode: bool) -> jax.Array:
        """What the PE's embed hook reads (`PositionalEncoding.embed_input`): `[batch, length]`
        int32, the positions or each token's index within its number. With `decode`, the run
        the last call ended on is kept in the cache, so the index of a generated token equals
        the one a full recomputation gives it."""
        if pe.embed_input == "positions":
            return positions
        if pe.embed_input != "digit_runs":
            raise ValueError(
                f"PE {self.pe['name']!r} asks for embed_input={pe.embed_input!r}; expected "
                "'positions' or 'digit_runs'"
            )
        if not decode:
            return digit_runs.digit_runs(tokens, valid, self.digit_ids)
        last = self.variable("cache", "digit_run", jnp.zeros, tokens.shape[:1], jnp.int32)
        runs = digit_runs.digit_runs(tokens, valid, self.digit_ids, last.value)
        if not self.is_initializing():
            last.value = runs[:, -1]
        return runs
