"""The config files lenggen ships, found by name wherever lenggen is installed.

The repository's configs/ directory is packaged into the wheel as `lenggen.configs` (setup.py),
so a pip-installed lenggen runs the same commands as a checkout:

  --config=configs/quickstart.py           # a file under the current directory, if there is
                                           # one; else the shipped configs/quickstart.py
  --config=quickstart                      # the shipped config by name (".py" optional)
  --config=configs/base.py:task=copy,pe=t5 # arguments after the colon, as always

A path that exists is always used as it is, so an edited copy in the current directory wins
over the shipped one.
"""

import importlib.util
import os
from collections.abc import Sequence

_PREFIX = "configs" + os.sep


def shipped_dir() -> str:
    """The directory of the shipped configs: the installed `lenggen.configs` package, else
    (lenggen imported from a checkout that was not installed) the checkout's configs/."""
    spec = importlib.util.find_spec("lenggen.configs")
    if spec is not None and spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def resolve(spec: str) -> str:
    """`spec` (`PATH[:ARGUMENTS]`) with PATH replaced by the shipped config's path when PATH
    does not exist but names a shipped config; otherwise `spec` unchanged (so the caller's own
    "file not found" error names what the user typed)."""
    path, colon, argument = spec.partition(":")
    if not path or os.path.exists(path):
        return spec
    name = path[len(_PREFIX) :] if path.startswith(_PREFIX) else path
    for candidate in (name, name + ".py"):
        shipped = os.path.join(shipped_dir(), candidate)
        if os.path.isfile(shipped):
            return shipped + colon + argument
    return spec


def resolve_argv(argv: Sequence[str], flag: str) -> list[str]:
    """`argv` with the value of `--FLAG=...` / `--FLAG ...` passed through `resolve`."""
    out, resolve_next = [], False
    for arg in argv:
        if resolve_next:
            out.append(resolve(arg))
            resolve_next = False
        elif arg.startswith(f"--{flag}="):
            out.append(f"--{flag}=" + resolve(arg[len(flag) + 3 :]))
        else:
            out.append(arg)
            resolve_next = arg == f"--{flag}"
    return out
