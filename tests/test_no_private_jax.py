"""lenggen uses JAX's public API only: no module imports `jax._src` or calls the
interpreter-level helpers (`get_bind_params`, a jaxpr equation's context manager) whose
behaviour JAX does not promise across versions."""

import pathlib
import re

import lenggen

PRIVATE = re.compile(r"jax\._src|get_bind_params|\.ctx\.manager")


def test_no_module_relies_on_private_jax():
    root = pathlib.Path(lenggen.__file__).parent
    sources = sorted(root.rglob("*.py"))
    assert len(sources) > 50  # the whole package was scanned
    hits = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert hits == []
