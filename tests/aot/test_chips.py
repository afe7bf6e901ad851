"""Tests of lenggen/chips.py: published figures, precision passes and the roofline bound."""

import pytest

from lenggen import chips


def test_published_figures():
    """The figures the plan prices with (Google Cloud's TPU pages), per chip."""
    figures = {
        name: (c.peak_bf16_flops, c.hbm_bytes_per_second, c.hbm_bytes / 2**30)
        for name, c in chips.CHIPS.items()
    }
    assert figures == {
        "v4": (275e12, 1.2e12, 32),
        "v5e": (197e12, 0.819e12, 16),
        "v5p": (459e12, 2.765e12, 95),
        "v6e": (918e12, 1.638e12, 32),
    }


@pytest.mark.parametrize(
    ("dtype", "precision", "expected"),
    [
        ("float32", "highest", 6),
        ("float32", "high", 3),
        ("float32", "default", 1),
        ("bfloat16", "highest", 1),
        ("bfloat16", "default", 1),
    ],
)
def test_passes(dtype, precision, expected):
    assert chips.passes(dtype, precision) == expected


def test_passes_rejects_unknown_precision():
    with pytest.raises(ValueError, match=r"unknown precision 'fp32'; expected one of \("):
        chips.passes("float32", "fp32")


def test_roofline_compute_bound_and_memory_bound():
    """Worked by hand on v5e: 197 TFLOP at 6 passes is 6 s; 0.819 TB at 819 GB/s is 1 s."""
    v5e = chips.CHIPS["v5e"]
    assert chips.roofline_seconds(
        197e12, 0.819e12, v5e, devices_per_chip=1, matmul_passes=6
    ) == pytest.approx(6.0)
    assert chips.roofline_seconds(
        197e12, 0.819e12, v5e, devices_per_chip=1, matmul_passes=1
    ) == pytest.approx(1.0)
    # 4 TB of traffic is the bound at one pass: 4e12 / 0.819e12 s.
    assert chips.roofline_seconds(
        197e12, 4e12, v5e, devices_per_chip=1, matmul_passes=1
    ) == pytest.approx(4e12 / 0.819e12)
    # Two devices per chip (v4's TensorCores) share it: each has half the peak.
    v4 = chips.CHIPS["v4"]
    assert chips.roofline_seconds(
        275e12, 0, v4, devices_per_chip=2, matmul_passes=1
    ) == pytest.approx(2.0)


def test_topology_names():
    assert chips.chip_of_topology("v5e:2x2") is chips.CHIPS["v5e"]
    assert chips.chips_in_topology("v4:2x2x2") == 8
    assert chips.chips_in_topology("v5e:4x4") == 16
    with pytest.raises(ValueError, match=r"no published figures for TPU generation 'v3'"):
        chips.chip_of_topology("v3:2x2")
