"""Parses the `key=value,...` argument of a config file (`--config=configs/base.py:ARGS`).

Follows big_vision's convention: a config file's `get_config(arg)` receives the text after the
colon. Values are typed by the defaults they replace, so `seed=abc` fails here, not at step 0.
"""

import importlib.util
import types
from typing import Any


class ConfigArgumentError(ValueError):
    """A malformed or unknown config argument."""


def _coerce(key: str, text: str, default: Any) -> Any:
    if isinstance(default, bool):
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigArgumentError(
            f"Config argument {key}={text!r}: expected a boolean (true/false)."
        )
    for kind in (int, float):
        if isinstance(default, kind):
            try:
                return kind(text)
            except ValueError:
                raise ConfigArgumentError(
                    f"Config argument {key}={text!r}: expected {kind.__name__} like {default!r}."
                ) from None
    return text


def parse(arg: str | None, /, **defaults: Any) -> dict[str, Any]:
    """Returns `defaults` updated by `arg` ("task=copy,pe=nope,seed=1").

    Raises:
      ConfigArgumentError: `arg` not a string, a piece without "=", an empty key, a repeated or
        unknown key (the message lists the valid ones), or a value of the wrong type. Nothing
        else: tests/reliability fuzzes this with arbitrary text.
    """
    values = dict(defaults)
    if arg is not None and not isinstance(arg, str):
        raise ConfigArgumentError(
            f"Config argument {arg!r} has type {type(arg).__name__}; expected a string like "
            "'task=copy,seed=1'."
        )
    if not arg:
        return values
    seen = set()
    for piece in arg.split(","):
        if "=" not in piece:
            raise ConfigArgumentError(
                f"Config argument {piece!r} is not key=value. Expected e.g. "
                f"'{','.join(f'{k}={v}' for k, v in list(defaults.items())[:2])}'."
            )
        key, text = (part.strip() for part in piece.split("=", 1))
        if key not in defaults:
            raise ConfigArgumentError(
                f"Unknown config argument {key!r}. Valid arguments: {', '.join(sorted(defaults))}."
            )
        if key in seen:
            raise ConfigArgumentError(f"Config argument {key!r} is given twice.")
        seen.add(key)
        values[key] = _coerce(key, text, defaults[key])
    return values


def load_file(path: str, name: str) -> types.ModuleType:
    """The Python file at `path` executed as a module named `name`.

    Config and grid files are loaded by path, not imported as a package, as ml_collections'
    `config_flags` loads `--config=FILE`; so a config that builds on another (quickstart on
    base) loads it with this.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
