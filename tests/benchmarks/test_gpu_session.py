"""benchmarks/gpu_session.py: its inputs, and its committed H200 results rebuilt from their
JSON lines."""

import pathlib

import numpy as np
import pytest

from benchmarks import gpu_session

RESULTS = pathlib.Path(gpu_session.__file__).parent / "results"


def _queries_without_a_key(positions, valid) -> np.ndarray:
    q_positions, k_positions = positions
    visible = (k_positions[:, None, :] <= q_positions[:, :, None]) & valid[:, None, :]
    return np.argwhere(~visible.any(axis=-1))


@pytest.mark.parametrize("padding", ["right", "none"])
def test_loader_like_padding_leaves_every_query_a_key(padding):
    _, (q_pos, k_pos, valid), _ = gpu_session._attention_case(4, 200, 200, 0, padding)
    assert _queries_without_a_key((q_pos, k_pos), valid).size == 0
    if padding == "right":  # real tokens first, then padding
        assert (np.diff(valid.astype(int), axis=1) <= 0).all() and not valid.all()


def test_random_padding_has_the_query_that_broke_cudnns_gradients():
    # The H200's prefill/random case: example 1's first key is padding, so its query 0 sees none.
    _, (q_pos, k_pos, valid), _ = gpu_session._attention_case(4, 200, 200, 0, "random")
    assert _queries_without_a_key((q_pos, k_pos), valid).tolist() == [[1, 0]]


def test_decode_queries_are_the_last_key_positions():
    _, (q_pos, k_pos, _), _ = gpu_session._attention_case(2, 1, 40, 0, "none")
    assert q_pos.tolist() == [[39], [39]] and k_pos[0].tolist() == list(range(40))


def test_relative_errors_of_empty_and_zero_gradients():
    assert gpu_session._rel(gpu_session._flat({}), gpu_session._flat({})) == 0.0
    assert gpu_session._rel(np.array([3.0, 4.0]), np.array([0.0, 0.0])) == 5.0
    assert gpu_session._rel(np.array([1.0, 1.0]), np.array([1.0, 2.0])) == pytest.approx(
        1 / np.sqrt(5)
    )


def test_the_committed_tables_rebuild_from_the_json_lines():
    text = (RESULTS / "gpu_session_h200.md").read_text()
    for number in (1, 2):
        rendered = gpu_session.render(RESULTS / f"gpu_session_h200_{number}.jsonl", number)
        assert rendered in text
    # The numbers the summary quotes: T5 vs NoPE per step, and the three kernels' forward times.
    assert "| highest | t5 | dot_product | 48.15 (0.68) | 1.05x |" in text
    assert "| bfloat16 | forward | t5 | 2048 | pallas_flash |  | 134.36 | 6.39x | no |" in text
    assert "| bfloat16 | forward | t5 | 2048 | dot_product |  | 10.31 | 0.49x | yes |" in text
