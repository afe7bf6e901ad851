"""NoPE: no positional encoding at all.

docs/paper.md ("Positional encodings"): q·k under the causal mask, and nothing else. Order
information reaches the model only through the causal mask (Theorem 1 of the paper: the first
layer can recover absolute positions from it). Every hook keeps the base class's no-op.
"""

from lenggen.model.positional.base import PositionalEncoding


class NoPositionalEncoding(PositionalEncoding):
    """The identity PE: `embed` and `rotate` return their input, `bias` returns None."""
