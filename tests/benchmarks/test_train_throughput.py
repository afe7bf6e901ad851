"""benchmarks/train_throughput.py (JAX side) and the numpy half of benchmarks/torch_decoder.py.

CI has no torch: these tests cover what runs without it — the FLOP formula against an
independent count (the dot products in the jaxpr of lenggen's own forward and train step), the
JAX measurement on a tiny model, the agreement check, the JSON-lines protocol with the worker
(a stand-in worker script, and the real one in a Python without torch), and the tables,
schedule and decay rule of the PyTorch twin against lenggen's.
"""

import functools
import json
import math
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from benchmarks import torch_decoder, train_throughput
from lenggen.model import positional
from lenggen.model.decoder import Decoder
from lenggen.model.positional import absolute, rotary
from lenggen.train import optimizer as optimizer_lib
from lenggen.train import step as step_lib
from tests.model import tiny

TINY = dict(num_layers=2, d_model=16, num_heads=2, d_kv=8, d_ff=24)
VOCAB, BATCH, LENGTH = 11, 4, 8


def _dot_flops(jaxpr) -> int:
    """2 * output size * contracted size of every dot_general, sub-jaxprs included."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs_shape = eqn.invars[0].aval.shape
            contracted = math.prod(lhs_shape[i] for i in lhs_contract)
            total += 2 * math.prod(eqn.outvars[0].aval.shape) * contracted
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += _dot_flops(inner)
    return total


def _model(pe: str, sizes=None) -> Decoder:
    return Decoder(vocab_size=VOCAB, dropout_rate=0.0, pe=tiny.pe_config(pe), **(sizes or TINY))


def _batch() -> dict:
    return {
        k: jnp.asarray(v) for k, v in train_throughput.synthetic_batch(BATCH, LENGTH, VOCAB).items()
    }


@pytest.mark.parametrize("pe", ["nope", "ape", "t5", "rotary", "alibi"])
def test_forward_matmul_flops_are_a_third_of_the_formula(pe):
    model, batch = _model(pe), _batch()
    params = jax.eval_shape(
        model.init, jax.random.key(0), batch["tokens"], batch["positions"], batch["valid"]
    )["params"]
    jaxpr = jax.make_jaxpr(model.apply)(
        {"params": params}, batch["tokens"], batch["positions"], batch["valid"]
    )
    expected = train_throughput.train_flops(TINY, VOCAB, BATCH, LENGTH) // 3
    # No PE adds a matmul: ALiBi's bias is a broadcast multiply, T5's a table gather.
    assert _dot_flops(jaxpr.jaxpr) == expected


def test_train_step_matmul_flops_equal_the_formula():
    model, batch = _model("t5"), _batch()
    config = train_throughput.case_config("quickstart", "t5", 0.0)
    optimizer = optimizer_lib.make_optimizer(config.train)
    schedule = optimizer_lib.learning_rate_schedule(config.train)
    params = jax.eval_shape(
        model.init, jax.random.key(0), batch["tokens"], batch["positions"], batch["valid"]
    )["params"]
    params = jax.tree.map(lambda p: jnp.zeros(p.shape, p.dtype), params)
    state = dict(step=jnp.int32(0), params=params, opt_state=optimizer.init(params))
    step = functools.partial(
        step_lib.train_step, model=model, optimizer=optimizer, schedule=schedule
    )
    jaxpr = jax.make_jaxpr(step)(state, batch, jax.random.key(1))
    assert _dot_flops(jaxpr.jaxpr) == train_throughput.train_flops(TINY, VOCAB, BATCH, LENGTH)


def test_formula_by_hand_and_gemm_list():
    # Quickstart size, V 32, B 64, T 64: N = 2 (4*128*128 + 2*128*512) + 32*128 = 397,312.
    quick = train_throughput.SIZES["quickstart"]
    assert train_throughput.matmul_params(quick, 32) == 397_312
    assert train_throughput.train_flops(quick, 32, 64, 64) == (
        6 * 397_312 * 4096 + 12 * 2 * 64 * 64**2 * 128
    )
    for size in train_throughput.SIZES.values():
        gemms = train_throughput.train_gemms(size, 32, 64, 64)
        assert len(gemms) == 3 * (8 * size["num_layers"] + 1)
        assert sum(2 * b * m * k * n for b, m, k, n in gemms) == train_throughput.train_flops(
            size, 32, 64, 64
        )


def test_peak_and_roofline_are_positive():
    peaks = train_throughput.matmul_peak([32, 64], repeats=1)
    assert sorted(peaks) == [32, 64] and all(g > 0 for g in peaks.values())
    assert train_throughput.roofline([(2, 8, 4, 8), (1, 16, 8, 4)], repeats=1) > 0


@pytest.fixture(scope="module")
def jax_run():
    config = train_throughput.case_config("quickstart", "t5", 0.0)
    config.model.update(**TINY)
    batch = train_throughput.synthetic_batch(BATCH, LENGTH, VOCAB)
    run = train_throughput.measure_jax(
        config, VOCAB, batch, check_steps=2, warmup=1, steps=2, repeats=2
    )
    return run, batch


def test_measure_jax_returns_sane_numbers(jax_run):
    run, batch = jax_run
    assert sorted(run) == ["checked", "devices", "logits", "loss", "params", "step_seconds"]
    assert len(run["step_seconds"]) == 2 and all(0 < s < 60 for s in run["step_seconds"])
    assert run["devices"] == jax.device_count()
    shapes = torch_decoder.parameter_shapes(dict(vocab_size=VOCAB, pe=dict(name="t5"), **TINY))
    assert {k: v.shape for k, v in run["params"].items()} == shapes
    assert run["logits"].shape == (BATCH, LENGTH, VOCAB)
    # The loss recomputed from the logits by hand: masked mean of -log softmax[next token].
    logits = run["logits"][:, :-1].astype(np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_probs, batch["tokens"][:, 1:, None], -1)[..., 0]
    mask = batch["loss_mask"][:, 1:]
    assert run["loss"] == pytest.approx(-(picked * mask).sum() / mask.sum(), rel=1e-5)
    moved = [not np.array_equal(run["checked"][k], v) for k, v in run["params"].items()]
    assert all(moved)  # two steps, the second with lr > 0, move every parameter


def test_check_agreement_accepts_equal_runs_and_float_noise(jax_run):
    run, _ = jax_run
    torch_out = {
        "logits": run["logits"] + 5e-5,
        **{f"params/{k}": v.copy() for k, v in run["checked"].items()},
    }
    # One element of a parameter moved the other way (Adam at a ~0 gradient): tolerated.
    name = "block_0/ffn/wi"
    torch_out[f"params/{name}"].ravel()[0] = (
        2 * run["params"][name].ravel()[0] - (run["checked"][name].ravel()[0])
    )
    result = train_throughput.check_agreement(run, run["loss"], torch_out, "t", 1e-4, 1e-2)
    assert result["logit_diff"] == pytest.approx(5e-5, rel=1e-2)
    assert result["update_diff"] == 0.0


@pytest.mark.parametrize("what", ["logits", "loss", "decay", "missing"])
def test_check_agreement_rejects_real_differences(jax_run, what):
    run, _ = jax_run
    torch_out = {
        "logits": run["logits"].copy(),
        **{f"params/{k}": v.copy() for k, v in run["checked"].items()},
    }
    loss = run["loss"]
    if what == "logits":
        torch_out["logits"][0, 0, 0] += 1e-3
    elif what == "loss":
        loss += 1e-3
    elif what == "decay":  # e.g. weight decay on a norm scale: every element's update 5% off
        name = "block_1/ffn_norm/scale"
        before = run["params"][name]
        torch_out[f"params/{name}"] = before + 1.05 * (run["checked"][name] - before)
    else:
        del torch_out["params/final_norm/scale"]
    with pytest.raises(train_throughput.MismatchError, match="t5case"):
        train_throughput.check_agreement(run, loss, torch_out, "t5case", 1e-4, 1e-2)


def test_update_difference_ignores_the_worst_tenth_of_a_percent():
    before = np.zeros(2000, np.float32)
    jax_after = np.full(2000, 1e-3, np.float32)
    torch_after = jax_after.copy()
    torch_after[:2] = -1e-3  # two sign flips: the worst 0.1% (2 of 2000) are left out
    assert train_throughput.update_difference(before, jax_after, torch_after) == 0.0
    torch_after[:3] = -1e-3  # a third one counts: 2e-3 / (1e-3 sqrt(2000))
    assert train_throughput.update_difference(before, jax_after, torch_after) == pytest.approx(
        2 / math.sqrt(2000), rel=1e-5
    )


def test_parse_reply_validates():
    good = train_throughput.parse_reply('{"name": "a", "loss": 1.0}', ("name", "loss"))
    assert good == {"name": "a", "loss": 1.0}
    cases = [
        ("not json", "not JSON"),
        ("[1, 2]", "expected an object"),
        ('{"error": "RuntimeError: boom"}', "RuntimeError: boom"),
        ('{"name": "a"}', r"lacks \['loss'\]"),
    ]
    for line, message in cases:
        with pytest.raises(train_throughput.TorchWorkerError, match=message):
            train_throughput.parse_reply(line, ("name", "loss"))


def test_step_seconds_validates():
    assert train_throughput.step_seconds({"step_seconds": [0.5, 0.25]}, "eager") == [0.5, 0.25]
    assert train_throughput.step_seconds({"error": "no compiler"}, "compiled") is None
    for bad in ([], [0.1, -1.0], ["1"], None):
        with pytest.raises(train_throughput.TorchWorkerError, match="eager"):
            train_throughput.step_seconds({"step_seconds": bad}, "eager")


def test_missing_interpreter_names_the_setup_script(tmp_path):
    with pytest.raises(train_throughput.TorchWorkerError, match="benchmarks/torch_env.sh"):
        train_throughput.TorchWorker(str(tmp_path / "no-python"))


def test_real_worker_without_torch_says_how_to_get_it(tmp_path, capfd):
    # The real worker script in a Python where `import torch` fails (hidden even if installed):
    # it exits with a message and sends no hello.
    script = tmp_path / "without_torch.py"
    script.write_text(
        "import runpy, sys\nsys.modules['torch'] = None\n"
        f"runpy.run_path({str(train_throughput.WORKER)!r}, run_name='__main__')\n"
    )
    with pytest.raises(train_throughput.TorchWorkerError, match="benchmarks/torch_env.sh"):
        train_throughput.TorchWorker(sys.executable, script)
    assert "torch is not installed" in capfd.readouterr().err


def _fake_worker(tmp_path, hello: dict) -> str:
    script = tmp_path / "worker.py"
    script.write_text(
        "import json, sys\n"
        f"print(json.dumps({hello!r}), flush=True)\n"
        "for line in sys.stdin:\n"
        "    request = json.loads(line)\n"
        "    print(json.dumps({'name': request['name'], 'echo': request}), flush=True)\n"
    )
    return str(script)


def test_worker_protocol_round_trip(tmp_path):
    hello = {"protocol": train_throughput.PROTOCOL, "torch": "9.9", "threads": 2}
    worker = train_throughput.TorchWorker(sys.executable, _fake_worker(tmp_path, hello))
    assert worker.hello == hello
    reply = worker.request({"name": "x", "steps": [1, 2]}, ("name", "echo"))
    assert reply == {"name": "x", "echo": {"name": "x", "steps": [1, 2]}}
    worker.close()
    assert worker.process.returncode == 0


def test_worker_protocol_version_is_checked(tmp_path):
    hello = {"protocol": train_throughput.PROTOCOL + 1, "torch": "9.9", "threads": 2}
    with pytest.raises(train_throughput.TorchWorkerError, match="protocol"):
        train_throughput.TorchWorker(sys.executable, _fake_worker(tmp_path, hello))


def test_default_torch_python(monkeypatch):
    find_spec = train_throughput.importlib.util.find_spec
    monkeypatch.setattr(
        train_throughput.importlib.util,
        "find_spec",
        lambda name: None if name == "torch" else find_spec(name),
    )
    assert train_throughput.default_torch_python() == str(train_throughput.TORCH_VENV_PYTHON)
    monkeypatch.setattr(train_throughput.importlib.util, "find_spec", lambda name: object())
    assert train_throughput.default_torch_python() == sys.executable


def test_case_config_and_batch():
    config = train_throughput.case_config("4x256", "alibi", 0.0)
    assert config.model.num_layers == 4 and config.model.d_model == 256
    assert config.model.pe.name == "alibi" and config.train.learning_rate == 1e-3
    batch = train_throughput.synthetic_batch(3, 6, VOCAB)
    assert batch["tokens"].dtype == np.int32 and batch["tokens"].max() < VOCAB
    np.testing.assert_array_equal(batch["positions"][2], np.arange(6))
    np.testing.assert_array_equal(batch["loss_mask"][0], [0, 0, 0, 1, 1, 1])
    assert batch["valid"].all()


# ---- The numpy half of the PyTorch twin against lenggen.


def test_alibi_slopes_match_lenggen():
    for heads in range(1, 17):
        assert torch_decoder.alibi_slopes(heads) == positional.alibi_slopes(heads)


def test_inverse_frequencies_match_lenggen():
    # APE: sinusoidal_embedding at position 1 is [sin(w)..., cos(w)...].
    code = np.asarray(absolute.sinusoidal_embedding(jnp.ones((1,), jnp.int32), 32))[0]
    np.testing.assert_allclose(np.sin(torch_decoder.inverse_frequencies(32)), code[:16], rtol=1e-6)
    # Rotary: pair k of [1, 0, 1, 0, ...] at position p turns to (cos, sin)(p w_k).
    pe = rotary.RotaryPositionalEncoding(num_heads=1, fraction=0.5, base=500.0)
    x = jnp.tile(jnp.asarray([1.0, 0.0]), 8)[None, None, None, :]  # [1, 1, 1, 16]
    out = np.asarray(pe.rotate(x, jnp.full((1, 1), 7, jnp.int32)))[0, 0, 0]
    angles = 7 * torch_decoder.inverse_frequencies(8, 500.0)
    np.testing.assert_allclose(out[:8:2], np.cos(angles), atol=1e-6)
    np.testing.assert_allclose(out[1:8:2], np.sin(angles), atol=1e-6)
    np.testing.assert_array_equal(out[8:], np.tile([1.0, 0.0], 4))


@pytest.mark.parametrize("buckets,max_distance", [(32, 128), (8, 20), (2, 3)])
def test_t5_bucket_table_matches_lenggen(buckets, max_distance):
    relative = np.arange(-400, 6)
    expected = positional.t5_relative_bucket(jnp.asarray(relative), buckets, max_distance)
    table = torch_decoder.t5_bucket_by_distance(buckets, max_distance)
    got = table[np.clip(-relative, 0, max_distance)]
    np.testing.assert_array_equal(got, np.asarray(expected))


@pytest.mark.parametrize("num_steps,warmup", [(4000, 0.06), (10, 0.0), (7, 1.0)])
def test_learning_rate_matches_lenggen(num_steps, warmup):
    train = dict(
        learning_rate=1e-3, end_learning_rate=1e-5, warmup_fraction=warmup, num_steps=num_steps
    )
    schedule = optimizer_lib.learning_rate_schedule(ml_collections.ConfigDict(train))
    # optax evaluates in float32 as end + (init - end) * (1 - t): ~1e-5 relative rounding.
    steps = sorted({0, 1, 2, 239, 240, 241, num_steps - 1, num_steps, num_steps + 3})
    for step in steps:
        assert torch_decoder.learning_rate(step, train) == pytest.approx(
            float(schedule(step)), rel=1e-4, abs=1e-12
        ), step


@pytest.mark.parametrize("pe", ["nope", "t5", "alibi"])
def test_parameter_names_shapes_and_decay_match_lenggen(pe):
    model, batch = _model(pe), _batch()
    params = jax.eval_shape(
        model.init, jax.random.key(0), batch["tokens"], batch["positions"], batch["valid"]
    )["params"]
    params = nn.unbox(params)
    shapes = {
        k: v.shape
        for k, v in train_throughput.flat(
            jax.tree.map(lambda p: np.zeros(p.shape, p.dtype), params)
        ).items()
    }
    described = dict(vocab_size=VOCAB, pe=dict(name=pe), **TINY)
    assert torch_decoder.parameter_shapes(described) == shapes
    mask = train_throughput.flat(optimizer_lib.decay_mask(params, "norms_and_biases"))
    assert {k: bool(v) for k, v in mask.items()} == {k: torch_decoder.decays(k) for k in shapes}
    assert not torch_decoder.decays("block_0/ffn_norm/scale") and torch_decoder.decays("embedding")


def test_worker_request_is_json_serialisable():
    config = train_throughput.case_config("quickstart", "rotary", 0.0)
    train = {field: config.train[field] for field in train_throughput.TRAIN_FIELDS}
    assert json.loads(json.dumps(train)) == train
    assert torch_decoder.PROTOCOL == train_throughput.PROTOCOL
    assert torch_decoder.PE_NAMES == train_throughput.PE_NAMES


def test_fixed_cost_rows_bound_the_gain_of_a_zero_overhead_step():
    # PyTorch eager: 5 ms at batch 1, 100 ms at batch 64 -> at most 5% fixed; a step without
    # fixed cost runs the 95 ms of batch-scaled work: at most 100 / 95 = 1.05x. JAX took 80 ms.
    def case(key, batch, jax_s, **torch):
        best = min(torch, key=torch.get) if torch else None
        return dict(key=key, batch=batch, jax_s=jax_s, torch=torch, best_mode=best)

    cases = [
        case(("quickstart", "t5"), 1, 0.003, eager=0.005, compiled=0.004),
        case(("quickstart", "t5"), 64, 0.080, eager=0.100, compiled=0.120),
        case(("quickstart", "alibi"), 64, 0.080, eager=0.100),  # no batch 1
        case(("4x256", "t5"), 1, 0.010),  # PyTorch not run
        case(("4x256", "t5"), 64, 0.5, eager=0.6),
    ]
    assert train_throughput.fixed_cost_rows(cases) == [
        ["quickstart", "t5", "64", "eager", "5.0", "100.0", "<= 5%", "1.05x", "1.25x"]
    ]
