"""Key order for the JSON files people read: sorted, with numeric keys in numeric order.

`json.dump(..., sort_keys=True)` sorts by_length's "10" before "9"; every results file writes
through `natural_order` instead, so lengths read 9, 10, 11 in results.json, report.json, the
analyses' JSON and metrics.jsonl alike.
"""

from typing import Any


def _key(key: str) -> tuple:
    """Integers (e.g. "-1", "12") first, in numeric order; then the other keys, alphabetically."""
    text = str(key)
    digits = text[1:] if text.startswith("-") else text
    return (0, int(text), text) if digits.isdigit() else (1, 0, text)


def natural_order(tree: Any) -> Any:
    """`tree` with every dict rebuilt in `_key` order (lists and tuples keep their order)."""
    if isinstance(tree, dict):
        return {key: natural_order(tree[key]) for key in sorted(tree, key=_key)}
    if isinstance(tree, list | tuple):
        return [natural_order(item) for item in tree]
    return tree
