"""lenggen: how positional encodings decide length generalisation in decoder-only transformers."""

__version__ = "0.1.0"
