"""Which code, library versions, devices and command produced a run.

Recorded under a `provenance` key in config.json (when a run starts) and results.json (when it
is evaluated), e.g.

  {"lenggen": {"version": "0.1.0", "git_commit": "f0330a7...", "git_dirty": false},
   "packages": {"jax": "0.12.0", "jaxlib": "0.12.0", "flax": "0.12.1", "optax": "0.2.6",
                "orbax-checkpoint": "0.12.0"},
   "devices": {"platform": "cpu", "kind": "cpu", "count": 2, "processes": 1},
   "mesh": {"data": 2, "model": 1}, "python": "3.13.0", "host_os": "Linux-6.1-x86_64",
   "command": "python -m lenggen.main --config=configs/quickstart.py --workdir=runs/q",
   "started": "2026-12-04T03:20:00Z", "ended": "2026-12-04T03:24:10Z"}

`git_commit` and `git_dirty` are null when lenggen is not imported from a git checkout (e.g. an
installed wheel); `git_dirty` counts tracked files only. The workdir guard compares only the
training keys of config.json, so a resume on other code, versions or devices is not refused.
"""

import datetime
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import lenggen

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint")


def now() -> str:
    """The current UTC time, ISO 8601 to the second: '2026-12-04T03:20:00Z'."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def package_version(name: str) -> str | None:
    """The installed distribution's version, None if it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(directory: str, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", directory, *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):  # no git binary, or a hung filesystem
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(directory: str) -> dict[str, Any]:
    """{"git_commit": sha or None, "git_dirty": bool or None} of the checkout holding
    `directory`; both None when it is not inside a git work tree (or git is missing)."""
    if _git(directory, "rev-parse", "--is-inside-work-tree") != "true":
        return dict(git_commit=None, git_dirty=None)
    commit = _git(directory, "rev-parse", "HEAD")
    status = _git(directory, "status", "--porcelain", "--untracked-files=no")
    return dict(git_commit=commit, git_dirty=None if status is None else bool(status))


def code() -> dict[str, Any]:
    """lenggen's version and the git state of the directory it is imported from. An installed
    wheel lives in site-packages, outside any checkout, so it reports no commit (even when
    site-packages happens to sit inside some other repository, whose commit says nothing
    about lenggen's code: only a checkout whose top level holds setup.py and lenggen/ counts)."""
    package_dir = os.path.dirname(os.path.abspath(lenggen.__file__))
    state = dict(git_commit=None, git_dirty=None)
    top = _git(package_dir, "rev-parse", "--show-toplevel")
    checkout_package = os.path.join(top, "lenggen") if top else ""
    if (
        checkout_package
        and os.path.isdir(checkout_package)
        and os.path.samefile(checkout_package, package_dir)
    ):
        state = git_state(package_dir)
    return dict(version=lenggen.__version__, **state)


def devices(mesh: Any = None) -> dict[str, Any]:
    """Platform, device kind and count of the JAX runtime (and the mesh's axis sizes)."""
    import jax

    first = jax.devices()[0]
    found = dict(
        platform=first.platform,
        kind=first.device_kind,
        count=jax.device_count(),
        processes=jax.process_count(),
    )
    return dict(
        devices=found, mesh=None if mesh is None else {k: int(v) for k, v in mesh.shape.items()}
    )


def collect(
    mesh: Any = None, *, started: str | None = None, argv: Sequence[str] | None = None
) -> dict[str, Any]:
    """The provenance block of a run that started at `started` (default: now) on `mesh`."""
    argv = sys.argv if argv is None else argv
    program = os.path.basename(sys.executable)
    if argv and argv[0].endswith(os.path.join("lenggen", "main.py")):
        command = [program, "-m", "lenggen.main", *argv[1:]]  # python -m puts the path in argv[0]
    else:
        command = [program, *argv]
    return dict(
        lenggen=code(),
        packages={name: package_version(name) for name in PACKAGES},
        **devices(mesh),
        python=platform.python_version(),
        host_os=platform.platform(terse=True),
        command=shlex.join(command),
        started=started or now(),
        ended=None,
    )


def finished(block: Mapping[str, Any]) -> dict[str, Any]:
    """`block` with its end time set to now."""
    return {**block, "ended": now()}


def portable_path(path: str) -> str:
    """`path` as a results file records it: relative to the current directory when it lies
    under it (so shipped results name no machine's home or scratch directories), else as
    given (a gs:// path included)."""
    if "://" in path:
        return path
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute, os.getcwd())
    return path if relative == os.pardir or relative.startswith(os.pardir + os.sep) else relative
