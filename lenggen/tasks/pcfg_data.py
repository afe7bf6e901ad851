"""The real PCFG SET files shipped inside lenggen (Hupkes et al. 2020; MIT license).

Copied unmodified from github.com/i-machine-think/am-i-compositional at commit COMMIT and
gzip-compressed; lenggen/tasks/data/pcfgset/README.md gives the upstream paths, the license and
why the files are shipped instead of downloaded. Every read checks the file's sha256 and line
count, so a damaged install fails loudly instead of training on other data.

    pairs = pcfg_data.read("productivity/test")  # ((source, target), ...), 11,333 pairs

A source is the bare expression ("append A1 B2 , C3"), without the task's prompt words.
"""

import functools
import gzip
import hashlib
import importlib.resources

REPOSITORY = "github.com/i-machine-think/am-i-compositional"
COMMIT = "4f75bdd78889150dd78e90bbb7ddec840204c159"

# name -> (lines, sha256 of the uncompressed .src, sha256 of the uncompressed .tgt).
FILES = {
    "productivity/test": (
        11_333,
        "ba03bc5c468e955d537c06ca02c900c431a16f37b8b3f02e5eaa8a93434a3f73",
        "55704b1e887ffeffb104fc1ba4bc44dd6b0e95e34a355bd07d86881fd226a254",
    ),
    "pcfgset/dev": (
        4_860,
        "67bd466f77b7acb9863ddbbbacb4784848bdfb9094c40e2f94955aff7cb75d0a",
        "95648e697cb86a8724d71d6e841f37eea27d15951091b134538906bfbf0d14d1",
    ),
    "pcfgset/test": (
        9_721,
        "65af9357dc169a22629456be7cf43e97e275e076db10d72202d5389be7d8c0b2",
        "7d23524995eb28a4726b3f1ffc11daec8f13692f7f804f4be20ca1a25c941517",
    ),
}
# The pooled files whose pairs with at most 8 functions sample the productivity training set.
POOL = ("pcfgset/dev", "pcfgset/test")


class PcfgDataError(ValueError):
    """A shipped PCFG SET file that is missing or differs from the pinned upstream file."""


def _lines(name: str, suffix: str, lines: int, sha256: str) -> tuple[str, ...]:
    resource = importlib.resources.files("lenggen.tasks").joinpath(
        "data", "pcfgset", f"{name}{suffix}.gz"
    )
    try:
        data = gzip.decompress(resource.read_bytes())
    except FileNotFoundError:
        raise PcfgDataError(
            f"The PCFG SET file {name}{suffix}.gz is missing from the lenggen package "
            f"({resource}); reinstall lenggen with its package data, or use the task option "
            "source='generated'."
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise PcfgDataError(
            f"The PCFG SET file {name}{suffix}.gz ({resource}) has sha256 {digest}; expected "
            f"{sha256} ({REPOSITORY} at {COMMIT}); reinstall lenggen."
        )
    text = data.decode("utf-8").splitlines()
    if len(text) != lines:  # Cannot differ once the checksum matches; kept as documentation.
        raise PcfgDataError(f"{name}{suffix} has {len(text)} lines; expected {lines}.")
    return tuple(text)


@functools.cache
def read(name: str) -> tuple[tuple[str, str], ...]:
    """The (source, target) pairs of shipped file `name` (a key of FILES), in file order.

    Cached: the files are immutable package data, read once per process (about 0.1 s).
    """
    if name not in FILES:
        raise ValueError(f"Unknown PCFG SET file {name!r}; expected one of {', '.join(FILES)}.")
    lines, source_sha, target_sha = FILES[name]
    sources = _lines(name, ".src", lines, source_sha)
    targets = _lines(name, ".tgt", lines, target_sha)
    return tuple(zip(sources, targets, strict=True))
