"""Tests of lenggen/model/positional/__init__.py: the PE registry and `build`."""

import ml_collections
import pytest

from lenggen import config_schema
from lenggen.model import positional
from lenggen.model.positional.abacus import Abacus
from lenggen.model.positional.absolute import AbsolutePositionalEncoding
from lenggen.model.positional.alibi import ALiBi
from lenggen.model.positional.base import PositionalEncoding
from lenggen.model.positional.cope import CoPE
from lenggen.model.positional.coupling import PositionCoupling
from lenggen.model.positional.fire import FIRE
from lenggen.model.positional.kerple import KERPLE
from lenggen.model.positional.nope import NoPositionalEncoding
from lenggen.model.positional.rotary import RotaryPositionalEncoding
from lenggen.model.positional.t5 import T5RelativeBias
from tests.model import tiny


def test_names_in_paper_order():
    assert positional.names() == (
        "nope",
        "ape",
        "t5",
        "alibi",
        "rotary",
        "fire",
        "kerple",
        "cope",
        "abacus",
        "coupling",
    )


def test_get_returns_the_registered_classes():
    expected = {
        "nope": NoPositionalEncoding,
        "ape": AbsolutePositionalEncoding,
        "t5": T5RelativeBias,
        "alibi": ALiBi,
        "rotary": RotaryPositionalEncoding,
        "fire": FIRE,
        "kerple": KERPLE,
        "cope": CoPE,
        "abacus": Abacus,
        "coupling": PositionCoupling,
    }
    assert {name: positional.get(name) for name in positional.names()} == expected
    assert all(issubclass(cls, PositionalEncoding) for cls in expected.values())


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown positional encoding 'xpos'.*'nope', 'ape'"):
        positional.get("xpos")
    with pytest.raises(ValueError, match="unknown positional encoding 'sinusoid'"):
        positional.build(tiny.pe_config("sinusoid"), num_heads=3)


def test_default_options_are_the_papers():
    assert positional.default_options("nope") == {}
    assert positional.default_options("ape") == {"kind": "sinusoidal", "max_length": 16384}
    assert positional.default_options("t5") == {"num_buckets": 32, "max_distance": 128}
    assert positional.default_options("alibi") == {}
    assert positional.default_options("rotary") == {
        "fraction": 0.25,
        "base": 10000.0,
        "scaling": "none",
        "scaling_factor": 1.0,
        "original_max_position": 0,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
    }
    assert positional.default_options("fire") == {
        "mlp_width": 32,
        "init_c": 0.1,
        "init_threshold": 512.0,
        "eps": 1e-6,
    }
    assert positional.default_options("cope") == {"p_max": 64}


@pytest.mark.parametrize("name", positional.names())
def test_build_passes_heads_and_defaults(name):
    pe = positional.build(tiny.pe_config(name), num_heads=3, d_model=16)
    assert type(pe) is positional.get(name)
    assert (pe.num_heads, pe.d_model) == (3, 16)
    for option, value in positional.default_options(name).items():
        assert getattr(pe, option) == value


def test_build_passes_options():
    pe = positional.build(tiny.pe_config("rotary", fraction=0.5, base=500.0), num_heads=3)
    assert (pe.fraction, pe.base) == (0.5, 500.0)
    frozen = ml_collections.FrozenConfigDict(tiny.pe_config("t5", num_buckets=8, max_distance=20))
    pe = positional.build(frozen, num_heads=3)
    assert (pe.num_buckets, pe.max_distance) == (8, 20)


def test_missing_options_subdict_means_defaults():
    pe = positional.build(ml_collections.ConfigDict(dict(name="t5")), num_heads=3)
    assert (pe.num_buckets, pe.max_distance) == (32, 128)


def test_unknown_option_lists_valid_options():
    config = tiny.pe_config("rotary", fraction=0.25, base=10000.0, dim=16)
    message = r"unknown options \['dim'\].*'rotary'.*\['base', 'beta_fast', 'beta_slow', 'fraction'"
    with pytest.raises(ValueError, match=message):
        positional.build(config, num_heads=3)


def test_bad_option_values_are_rejected():
    message = r"ape kind must be one of \('sinusoidal', 'learned'\), got 'fixed'"
    with pytest.raises(ValueError, match=message):
        positional.build(tiny.pe_config("ape", kind="fixed", max_length=16), num_heads=3)
    with pytest.raises(ValueError, match="ape max_length must be >= 1, got 0"):
        positional.build(tiny.pe_config("ape", kind="learned", max_length=0), num_heads=3)
    with pytest.raises(ValueError, match="t5 num_buckets must be >= 2, got 1"):
        positional.build(tiny.pe_config("t5", num_buckets=1, max_distance=128), num_heads=3)
    message = "t5 max_distance must exceed num_buckets // 2 = 16, got 16"
    with pytest.raises(ValueError, match=message):
        positional.build(tiny.pe_config("t5", num_buckets=32, max_distance=16), num_heads=3)
    with pytest.raises(ValueError, match=r"rotary fraction must be in \(0, 1\], got 0.0"):
        positional.build(tiny.pe_config("rotary", fraction=0.0, base=10000.0), num_heads=3)
    with pytest.raises(ValueError, match="rotary base must be > 1, got 1.0"):
        positional.build(tiny.pe_config("rotary", fraction=0.25, base=1.0), num_heads=3)


def test_max_position_on_unbound_modules():
    # The config validation calls this before any model exists.
    got = {
        n: positional.build(tiny.pe_config(n), num_heads=3).max_position()
        for n in positional.names()
    }
    assert got == {
        "nope": None,
        "ape": 16383,
        "t5": None,
        "alibi": None,
        "rotary": None,
        "fire": None,
        "kerple": None,
        "cope": None,
        "abacus": None,  # embeds digit indices, not positions
        "coupling": None,
    }
    learned = tiny.pe_config("ape", kind="learned", max_length=100)
    assert positional.build(learned, num_heads=3).max_position() == 99


def test_exports():
    assert positional.t5_relative_bucket.__module__ == "lenggen.model.positional.t5"
    assert positional.alibi_slopes.__module__ == "lenggen.model.positional.alibi"


def test_the_shared_test_config_is_the_runs_config():
    """tests/model/tiny.pe_config builds what config_schema.pe_section gives a run."""
    for name in positional.names():
        assert tiny.pe_config(name).to_dict() == config_schema.pe_section(name).to_dict()
