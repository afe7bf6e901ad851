"""The repository is self-contained: no file cites a path outside it (the notes it was built
from are restated in docs/paper.md), and every relative link in its Markdown resolves."""

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parent.parent
SKIP = {".git", ".venv", "node_modules", "__pycache__", "runs"}
# Written in pieces so that this file does not match itself.
OUTSIDE = re.compile(
    "|".join([r"facts" + r"\.md", r"DESIGN" + r"\.md", r"STYLE" + r"\.md", r"\.\./" + "shared"])
)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _files(suffixes: tuple[str, ...]) -> list[pathlib.Path]:
    return sorted(
        path
        for path in REPO.rglob("*")
        if path.is_file()
        and path.suffix in suffixes
        and not SKIP.intersection(path.relative_to(REPO).parts)
    )


def test_no_file_cites_a_path_outside_the_repository():
    files = _files((".py", ".md", ".sh", ".txt", ".toml", ".cfg", ".ini"))
    assert len(files) > 100  # the tree was scanned
    hits = [
        f"{path.relative_to(REPO)}:{number}"
        for path in files
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert hits == []


def test_relative_markdown_links_resolve():
    broken = []
    for path in _files((".md",)):
        for target in LINK.findall(path.read_text()):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(REPO)} -> {target}")
    assert broken == []
