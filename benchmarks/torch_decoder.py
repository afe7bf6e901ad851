"""A PyTorch twin of lenggen's decoder, optimizer and schedule: the baseline of train_throughput.

The same model as `lenggen.model.decoder.Decoder` (docs/paper.md "Model"): pre-norm T5 blocks with
RMSNorm (eps 1e-6, fp32 statistics), no biases, ReLU feed-forward, attention logits NOT divided
by sqrt(d_kv), causal mask by position, tied embeddings with logits scaled by d_model^-0.5, and
each paper PE with lenggen's formulas (nope; ape: sinusoidal [sin..., cos...] halves; t5: one
bucketed table shared by all layers; alibi; rotary: GPT-J interleaved pairs on the first
`fraction` of each head). Parameters have lenggen's names and shapes ("block_0/attention/query"
is `[d_model, heads, d_kv]`), so a JAX parameter tree copies in as is. AdamW as
`lenggen.train.optimizer`: clip by global norm, decoupled weight decay on every parameter whose
path has no "norm" or "bias" in it, linear warmup then linear decay.

The numpy half (tables, schedule, decay rule) imports without torch, so the JAX tests check it
against lenggen. Run as a script, this file is the benchmark's worker in a Python that has
torch (it imports nothing from lenggen): see `serve` for the JSON-lines protocol.
"""

# Annotations name torch types, which do not exist where torch is not installed.
from __future__ import annotations

import functools
import json
import math
import sys
import time

import numpy as np

try:
    import torch
    from torch import nn
    from torch.nn import functional as F
except ModuleNotFoundError:  # The numpy half below still serves the JAX-side tests.
    torch = nn = F = None

PROTOCOL = 1
# The paper's five PEs (lenggen.report.paper.PAPER_PE_ORDER), written out: this worker runs in
# a PyTorch venv without lenggen.
PE_NAMES = ("nope", "ape", "t5", "alibi", "rotary")
ATTENTION = ("manual", "sdpa")
# lenggen.model.attention.reference.MASK_VALUE: finite, so a row with no visible key is uniform.
MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)
_Module = nn.Module if nn is not None else object


# ---- The numpy half: everything that does not need torch.


def alibi_slopes(num_heads: int) -> tuple[float, ...]:
    """The ALiBi paper's slopes: 2^(-8h/n) for n a power of two, else the largest power of two
    below n's slopes then every other slope of twice that power."""
    if num_heads < 1:
        raise ValueError(f"alibi needs num_heads >= 1, got {num_heads}")
    if math.log2(num_heads).is_integer():
        return tuple(2.0 ** (-8.0 * h / num_heads) for h in range(1, num_heads + 1))
    closest = 2 ** math.floor(math.log2(num_heads))
    return alibi_slopes(closest) + alibi_slopes(2 * closest)[0::2][: num_heads - closest]


def inverse_frequencies(dim: int, base: float = 10000.0) -> np.ndarray:
    """`[dim / 2]` float32 `base^(-2i / dim)`: the sinusoidal APE's (dim = d_model) and rotary's
    (dim = rotated width) frequencies, computed in float32 as lenggen does."""
    exponents = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    return (np.float32(1.0) / np.power(np.float32(base), exponents)).astype(np.float32)


def t5_bucket_by_distance(num_buckets: int = 32, max_distance: int = 128) -> np.ndarray:
    """`[max_distance + 1]` int64: the causal T5 bucket of distance 0 .. max_distance.

    Mesh-TF / HF `_relative_position_bucket(bidirectional=False)` in float32: distances below
    num_buckets // 2 are exact, then log-spaced; every distance >= max_distance lands in the
    last bucket, so `table[min(distance, max_distance)]` is the bucket of any distance.
    """
    distance = np.arange(max_distance + 1)
    max_exact = num_buckets // 2
    safe = np.maximum(distance, 1).astype(np.float32)
    log_ratio = np.log(safe / np.float32(max_exact)) / np.float32(
        math.log(max_distance / max_exact)
    )
    large = max_exact + (log_ratio * np.float32(num_buckets - max_exact)).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return np.where(distance < max_exact, distance, large).astype(np.int64)


def learning_rate(step: int, train: dict) -> float:
    """`lenggen.train.optimizer.learning_rate_schedule` at `step` (0-based): linear warmup from 0
    over round(warmup_fraction * num_steps) steps, then linear decay to end_learning_rate."""
    warmup = int(round(train["warmup_fraction"] * train["num_steps"]))
    peak, end = train["learning_rate"], train["end_learning_rate"]
    if step < warmup:
        return peak * step / max(warmup, 1)
    decay = max(train["num_steps"] - warmup, 1)
    return peak + (end - peak) * min(step - warmup, decay) / decay


def decays(name: str) -> bool:
    """Whether parameter `name` ("/"-joined path) gets weight decay: HF Trainer's rule, as
    lenggen's `_decay_mask`: not normalisation scales, not biases."""
    return not any("norm" in part.lower() or "bias" in part.lower() for part in name.split("/"))


def parameter_shapes(model: dict) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of the decoder described by `model` (lenggen's names)."""
    d, heads, d_kv = model["d_model"], model["num_heads"], model["d_kv"]
    shapes = {"embedding": (model["vocab_size"], d), "final_norm/scale": (d,)}
    if model["pe"]["name"] == "t5":
        shapes["pe/rel_embedding"] = (model["pe"].get("num_buckets", 32), heads)
    for layer in range(model["num_layers"]):
        block = f"block_{layer}"
        shapes.update(
            {
                f"{block}/attention_norm/scale": (d,),
                f"{block}/ffn_norm/scale": (d,),
                **{f"{block}/attention/{w}": (d, heads, d_kv) for w in ("query", "key", "value")},
                f"{block}/attention/out": (heads, d_kv, d),
                f"{block}/ffn/wi": (d, model["d_ff"]),
                f"{block}/ffn/wo": (model["d_ff"], d),
            }
        )
    return shapes


# ---- The torch half.


class PositionalEncoding(_Module):
    """One PE for the whole stack (lenggen builds one; T5's table is shared by every layer)."""

    def __init__(self, pe: dict, num_heads: int, d_model: int, d_kv: int):
        super().__init__()
        self.name = pe["name"]
        if self.name not in PE_NAMES:
            raise ValueError(f"unknown positional encoding {self.name!r}; valid: {PE_NAMES}")
        if self.name == "ape":
            if pe.get("kind", "sinusoidal") != "sinusoidal":
                raise ValueError(f"only the paper's sinusoidal APE is here, got {pe['kind']!r}")
            self.register_buffer("inv_freq", torch.from_numpy(inverse_frequencies(d_model)))
        elif self.name == "rotary":
            self.rotary_dim = int(d_kv * pe.get("fraction", 0.25))
            if self.rotary_dim < 2 or self.rotary_dim % 2:
                raise ValueError(
                    f"rotary needs an even int(fraction * d_kv) >= 2, got {self.rotary_dim}"
                )
            freq = inverse_frequencies(self.rotary_dim, pe.get("base", 10000.0))
            self.register_buffer("inv_freq", torch.from_numpy(freq))
        elif self.name == "t5":
            buckets = t5_bucket_by_distance(pe.get("num_buckets", 32), pe.get("max_distance", 128))
            self.register_buffer("buckets", torch.from_numpy(buckets))
            table = torch.empty(pe.get("num_buckets", 32), num_heads)
            self.rel_embedding = nn.Parameter(nn.init.normal_(table, std=d_model**-0.5))
        elif self.name == "alibi":
            self.register_buffer("slopes", torch.tensor(alibi_slopes(num_heads)))

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """`[batch, length, d_model]` + the sinusoidal code of `positions [batch, length]`."""
        if self.name != "ape":
            return x
        angles = positions.float()[..., None] * self.inv_freq  # -> [batch, length, d_model/2]
        return x + torch.cat([angles.sin(), angles.cos()], dim=-1)

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """`[batch, length, heads, head_dim]` -> same; GPT-J pairs (x0, x1), (x2, x3), ..."""
        if self.name != "rotary":
            return x
        dim = self.rotary_dim
        x_rot, x_pass = x[..., :dim], x[..., dim:]
        angles = positions.float()[..., None] * self.inv_freq  # -> [batch, length, dim/2]
        angles = angles.repeat_interleave(2, dim=-1)[:, :, None, :]  # -> [b, t, 1, dim]
        pairs = torch.stack([-x_rot[..., 1::2], x_rot[..., 0::2]], dim=-1).reshape(x_rot.shape)
        return torch.cat([x_rot * angles.cos() + pairs * angles.sin(), x_pass], dim=-1)

    def bias(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor | None:
        """`[batch, heads, q_len, k_len]` float32, or None."""
        distance = q_positions[:, :, None] - k_positions[:, None, :]  # -> [batch, q_len, k_len]
        if self.name == "t5":
            index = distance.clamp(0, self.buckets.shape[0] - 1)
            return self.rel_embedding[self.buckets[index]].permute(0, 3, 1, 2)
        if self.name == "alibi":
            return -self.slopes[None, :, None, None] * distance[:, None].float()
        return None


class RMSNorm(_Module):
    """T5 layer norm: x / sqrt(mean(x^2) + eps) * scale; no centring, no bias."""

    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        self.scale, self.eps = nn.Parameter(torch.ones(d_model)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + self.eps) * self.scale


def _normal(shape: tuple[int, ...], std: float) -> nn.Parameter:
    return nn.Parameter(nn.init.normal_(torch.empty(shape), std=std))


class Attention(_Module):
    """T5 self-attention (no 1/sqrt(d_kv)); HF T5's init (lenggen's docstring)."""

    def __init__(self, d_model: int, heads: int, d_kv: int, dropout: float, impl: str):
        super().__init__()
        if impl not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, got {impl!r}")
        self.heads, self.d_kv, self.dropout, self.impl = heads, d_kv, dropout, impl
        self.query = _normal((d_model, heads, d_kv), (d_model * d_kv) ** -0.5)
        self.key = _normal((d_model, heads, d_kv), d_model**-0.5)
        self.value = _normal((d_model, heads, d_kv), d_model**-0.5)
        self.out = _normal((heads, d_kv, d_model), (heads * d_kv) ** -0.5)

    def forward(self, x, positions, bias_and_mask, pe: PositionalEncoding):
        """`x [batch, length, d_model]`; `bias_and_mask [batch, heads or 1, length, length]`."""
        (b, t, d), width = x.shape, self.heads * self.d_kv

        def project(w):  # -> [batch, heads, length, d_kv]
            return (x @ w.reshape(d, width)).view(b, t, self.heads, self.d_kv)

        q = pe.rotate(project(self.query), positions).transpose(1, 2)
        k = pe.rotate(project(self.key), positions).transpose(1, 2)
        v = project(self.value).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        if self.impl == "sdpa":
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias_and_mask, dropout_p=dropout, scale=1.0
            )
        else:  # HF T5's own: scores, + bias and mask, fp32 softmax, dropout, weighted sum.
            weights = torch.softmax(q @ k.transpose(-1, -2) + bias_and_mask, dim=-1)
            out = F.dropout(weights, dropout, self.training) @ v
        return out.transpose(1, 2).reshape(b, t, width) @ self.out.reshape(width, d)


class FeedForward(_Module):
    """T5 DenseReluDense: ReLU(x W_in), dropout, W_out; no biases."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.wi = _normal((d_model, d_ff), d_model**-0.5)
        self.wo = _normal((d_ff, d_model), d_ff**-0.5)

    def forward(self, x: torch.Tensor, dropout: float) -> torch.Tensor:
        return F.dropout(torch.relu(x @ self.wi), dropout) @ self.wo


class Block(_Module):
    """Pre-norm T5 block: x + Dropout(Attention(Norm(x))), then h + Dropout(FFN(Norm(h)))."""

    def __init__(self, d_model, heads, d_kv, d_ff, dropout, impl):
        super().__init__()
        self.dropout = dropout
        self.attention_norm, self.ffn_norm = RMSNorm(d_model), RMSNorm(d_model)
        self.attention = Attention(d_model, heads, d_kv, dropout, impl)
        self.ffn = FeedForward(d_model, d_ff)

    def forward(self, x, positions, bias_and_mask, pe):
        drop = self.dropout if self.training else 0.0
        h = self.attention(self.attention_norm(x), positions, bias_and_mask, pe)
        x = x + F.dropout(h, drop)
        return x + F.dropout(self.ffn(self.ffn_norm(x), drop), drop)


class Decoder(_Module):
    """`lenggen.model.decoder.Decoder` in PyTorch; `model` holds its config fields plus
    vocab_size, with `pe` a dict {"name": ..., option: value}."""

    def __init__(self, model: dict, attention: str = "manual"):
        super().__init__()
        d, heads, d_kv = model["d_model"], model["num_heads"], model["d_kv"]
        self.d_model, self.dropout = d, model["dropout_rate"]
        self.embedding = _normal((model["vocab_size"], d), 1.0)
        self.pe = PositionalEncoding(model["pe"], heads, d, d_kv)
        self.blocks = [f"block_{layer}" for layer in range(model["num_layers"])]
        for name in self.blocks:
            block = Block(d, heads, d_kv, model["d_ff"], self.dropout, attention)
            self.add_module(name, block)
        self.final_norm = RMSNorm(d)

    def forward(self, tokens, positions, valid) -> torch.Tensor:
        """`[batch, length]` tokens/positions (int64), valid (bool) -> `[b, t, vocab]` logits."""
        drop = self.dropout if self.training else 0.0
        visible = (positions[:, None, :] <= positions[:, :, None]) & valid[:, None, :]
        bias = self.pe.bias(positions, positions)  # computed once, shared by every layer
        bias_and_mask = torch.where(visible[:, None], 0.0 if bias is None else bias, MASK_VALUE)
        x = F.dropout(self.pe.embed(self.embedding[tokens], positions), drop)
        for name in self.blocks:
            x = getattr(self, name)(x, positions, bias_and_mask, self.pe)
        x = F.dropout(self.final_norm(x), drop) * self.d_model**-0.5
        return x @ self.embedding.T

    def named_flat_parameters(self) -> dict[str, nn.Parameter]:
        """lenggen's "/"-joined parameter names -> parameters."""
        return {name.replace(".", "/"): p for name, p in self.named_parameters()}


def masked_loss(logits: torch.Tensor, tokens: torch.Tensor, loss_mask: torch.Tensor):
    """lenggen's `loss_and_metrics` loss: mean cross entropy of logits[:, :-1] predicting
    tokens[:, 1:] over the target tokens (loss_mask[:, 1:]) of the whole batch."""
    vocab = logits.shape[-1]
    ce = F.cross_entropy(
        logits[:, :-1].reshape(-1, vocab), tokens[:, 1:].reshape(-1), reduction="none"
    )
    mask = loss_mask[:, 1:].reshape(-1).float()
    return (ce * mask).sum() / mask.sum().clamp(min=1.0)


class Trainer:
    """AdamW + clip + schedule around a Decoder; `step(batch)` is one train step."""

    def __init__(self, model: Decoder, train: dict, compiled: bool):
        self.model, self.train, self.count = model, train, 0
        params = model.named_flat_parameters()
        groups = [
            {
                "params": [p for n, p in params.items() if decays(n)],
                "weight_decay": train["weight_decay"],
            },
            {"params": [p for n, p in params.items() if not decays(n)], "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW(
            groups,
            lr=0.0,
            betas=(train["adam_b1"], train["adam_b2"]),
            eps=train["adam_eps"],
            foreach=True,
        )

        def loss_fn(tokens, positions, valid, loss_mask):
            return masked_loss(self.model(tokens, positions, valid), tokens, loss_mask)

        if compiled:
            # Every case compiles the same `loss_fn` code for a new model: without a reset,
            # Dynamo keeps the older entries and, past its cache limit, silently runs eager.
            torch._dynamo.reset()
        self.loss_fn = torch.compile(loss_fn) if compiled else loss_fn

    def step(self, batch: dict) -> torch.Tensor:
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.count, self.train)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(batch["tokens"], batch["positions"], batch["valid"], batch["loss_mask"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train["grad_clip_norm"])
        self.optimizer.step()
        self.count += 1
        return loss


# ---- The worker.


def _load(arrays_path: str) -> tuple[dict, dict]:
    """The request's npz: `params/<name>` arrays and the batch (`batch/<key>`)."""
    with np.load(arrays_path) as arrays:
        params = {
            k.removeprefix("params/"): torch.from_numpy(arrays[k])
            for k in arrays.files
            if k.startswith("params/")
        }
        batch = {
            k.removeprefix("batch/"): torch.from_numpy(arrays[k])
            for k in arrays.files
            if k.startswith("batch/")
        }
    batch = {k: v.long() if k in ("tokens", "positions") else v for k, v in batch.items()}
    return params, batch


def _model(request: dict, params: dict) -> Decoder:
    model = Decoder(request["model"], request.get("attention", "manual"))
    own = model.named_flat_parameters()
    if set(own) != set(params):
        raise ValueError(f"parameter names differ: torch {sorted(own)}, sent {sorted(params)}")
    with torch.no_grad():
        for name, value in params.items():
            own[name].copy_(value)
    return model


def handle(request: dict) -> dict:
    """One benchmark case: check outputs, then time train steps in each requested mode."""
    params, batch = _load(request["arrays"])
    model = _model(request, params)
    model.eval()
    with torch.no_grad():
        logits = model(batch["tokens"], batch["positions"], batch["valid"])
        loss = masked_loss(logits, batch["tokens"], batch["loss_mask"])
    trainer = Trainer(model, request["train"], compiled=False)
    for _ in range(request["check_steps"]):
        trainer.step(batch)
    stepped = {n: p.detach().numpy() for n, p in model.named_flat_parameters().items()}
    np.savez(
        request["check_out"],
        logits=logits.numpy(),
        **{f"params/{n}": v for n, v in stepped.items()},
    )
    reply = {"name": request["name"], "loss": float(loss), "timings": {}}
    for mode in request["modes"]:
        try:
            trainer = Trainer(_model(request, params), request["train"], mode == "compiled")
            for _ in range(request["warmup"]):
                trainer.step(batch)
            windows = []
            for _ in range(request["repeats"]):
                start = time.perf_counter()
                for _ in range(request["steps"]):
                    trainer.step(batch)
                windows.append((time.perf_counter() - start) / request["steps"])
            reply["timings"][mode] = {"step_seconds": windows}
        except Exception as error:  # torch.compile may not work on every CPU: say why.
            reply["timings"][mode] = {"error": f"{type(error).__name__}: {error}"[:2000]}
    return reply


def matmul_peak(sizes: list[int], repeats: int) -> dict:
    """torch.mm float32 GFLOP/s per size (best of `repeats`)."""
    result = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        best = min(_seconds(functools.partial(torch.mm, a, b)) for _ in range(repeats))
        result[str(n)] = 2 * n**3 / best / 1e9
    return result


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def serve(stdin=sys.stdin, stdout=sys.stdout) -> None:
    """JSON lines: a hello {"protocol", "torch", "threads"}, then one reply per request line.

    Requests: {"kind": "peak", "sizes", "repeats"} -> {"kind": "peak", "gflops": {size: ...}};
    {"kind": "case", ...} (see `handle`) -> {"name", "loss", "timings": {mode: {"step_seconds"
    or "error"}}}; a failed request -> {"error": "..."}. EOF ends the worker.
    """
    hello = {"protocol": PROTOCOL, "torch": torch.__version__, "threads": torch.get_num_threads()}
    print(json.dumps(hello), file=stdout, flush=True)
    for line in stdin:
        try:
            request = json.loads(line)
            if request["kind"] == "peak":
                reply = {
                    "kind": "peak",
                    "gflops": matmul_peak(request["sizes"], request["repeats"]),
                }
            else:
                reply = handle(request)
        except Exception as error:
            reply = {"error": f"{type(error).__name__}: {error}"[:2000]}
        print(json.dumps(reply), file=stdout, flush=True)


if __name__ == "__main__":
    if torch is None:
        sys.exit(f"torch is not installed for {sys.executable}; run benchmarks/torch_env.sh")
    serve()
