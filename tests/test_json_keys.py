"""Results files list length buckets in numeric order (9 before 10), everything else sorted."""

import json

from lenggen import json_keys, results


def test_numeric_keys_in_numeric_order_then_names():
    tree = {
        "b": 1,
        "10": 2,
        "9": 3,
        "a": {"12": 0, "-1": 0, "100": 0, "x": 0},
        "2": [{"11": 1, "3": 1}],
    }
    ordered = json_keys.natural_order(tree)
    assert list(ordered) == ["2", "9", "10", "a", "b"]
    assert list(ordered["a"]) == ["-1", "12", "100", "x"]
    assert list(ordered["2"][0]) == ["3", "11"]
    assert ordered == tree  # same content


def test_results_files_write_by_length_numerically(tmp_path):
    by_length = {str(n): {"exact_match": 1.0, "n": 1} for n in (12, 9, 10, 2)}
    path = tmp_path / "results.json"
    results.write_json_atomic(str(path), {"splits": {"test": {"by_length": by_length}}})
    with open(path) as handle:
        saved = json.load(handle)  # json keeps the file's order
    assert list(saved["splits"]["test"]["by_length"]) == ["2", "9", "10", "12"]
    line = json.loads(results.json_line({"by_length": by_length}))
    assert list(line["by_length"]) == ["2", "9", "10", "12"]
