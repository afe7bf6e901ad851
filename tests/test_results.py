import json
import os

import numpy as np
import pytest

from lenggen import results


def test_bucket_exact_match_by_hand():
    summary = results.bucket_exact_match(
        lengths=[3, 3, 3, 5, 5, 9], correct=[True, False, True, True, True, False]
    )
    assert summary == {
        "overall": pytest.approx(4 / 6),
        "by_length": {
            "3": {"exact_match": pytest.approx(2 / 3), "n": 3},
            "5": {"exact_match": 1.0, "n": 2},
            "9": {"exact_match": 0.0, "n": 1},
        },
    }


def test_bucket_exact_match_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match=r"lengths \(2,\) and correct \(1,\)"):
        results.bucket_exact_match([1, 2], [True])


def test_atomic_write_keeps_the_old_file_when_serialisation_fails(tmp_path):
    path = tmp_path / "results.json"
    results.write_json_atomic(str(path), {"a": 1})
    with pytest.raises(TypeError):
        results.write_json_atomic(str(path), {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left


def test_table_marks_training_lengths_and_plot_is_written(tmp_path):
    payload = dict(
        train_max_length=4,
        step=10,
        splits=dict(
            validation=results.bucket_exact_match([3, 4], [True, True]),
            test=results.bucket_exact_match([5, 6, 6], [True, False, False]),
        ),
    )
    table = results.format_table(payload)
    lines = table.splitlines()
    assert lines[2].startswith("      3*") and "1.000 (n=   1)" in lines[2]
    assert lines[4].startswith("      5 ")
    assert "0.000 (n=   2)" in lines[5]
    assert lines[-2].split() == ["overall", "1.000", "0.333"]
    path = tmp_path / "plot.png"
    results.plot_accuracy_vs_length(payload, str(path), title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 5_000
    np.testing.assert_equal(payload["splits"]["test"]["overall"], 1 / 3)
