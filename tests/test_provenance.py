"""Provenance: versions from the installed distributions, git state of a checkout (clean,
dirty, none), the command line, and paths recorded relative to the current directory."""

import importlib.metadata
import os
import subprocess

import jax
import pytest

from lenggen import provenance, sharding


def _git(directory, *args):
    subprocess.run(
        ["git", "-C", str(directory), *args],
        check=True,
        capture_output=True,
        env={
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
        },
    )


def test_git_state_of_a_clean_and_a_dirty_checkout(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("one")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-q", "-m", "first")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    assert provenance.git_state(str(tmp_path)) == {"git_commit": head, "git_dirty": False}
    (tmp_path / "untracked.txt").write_text("not part of the code")
    assert provenance.git_state(str(tmp_path))["git_dirty"] is False
    (tmp_path / "a.txt").write_text("two")
    assert provenance.git_state(str(tmp_path)) == {"git_commit": head, "git_dirty": True}


def test_git_state_outside_a_checkout_is_null(tmp_path):
    assert provenance.git_state(str(tmp_path)) == {"git_commit": None, "git_dirty": None}


def test_code_reports_no_commit_for_a_package_outside_a_checkout(tmp_path, monkeypatch):
    # An installed lenggen: its package directory is not the top of a checkout's lenggen/.
    package = tmp_path / "site-packages" / "lenggen"
    package.mkdir(parents=True)
    monkeypatch.setattr(provenance.lenggen, "__file__", str(package / "__init__.py"))
    assert provenance.code() == {
        "version": provenance.lenggen.__version__,
        "git_commit": None,
        "git_dirty": None,
    }


def test_collect_names_versions_devices_mesh_and_command():
    mesh = sharding.make_mesh((2, 2))
    block = provenance.collect(
        mesh,
        started="2026-01-02T03:04:05Z",
        argv=["/x/lenggen/main.py", "--config=a b.py", "--workdir=w"],
    )
    assert block["packages"] == {
        name: importlib.metadata.version(name) for name in provenance.PACKAGES
    }
    assert block["devices"] == {
        "platform": "cpu",
        "kind": jax.devices()[0].device_kind,
        "count": 4,
        "processes": 1,
    }
    assert block["mesh"] == {"data": 2, "model": 2}
    assert block["command"].endswith("-m lenggen.main '--config=a b.py' --workdir=w")
    assert (block["started"], block["ended"]) == ("2026-01-02T03:04:05Z", None)
    ended = provenance.finished(block)["ended"]
    assert ended >= "2026-01-02T03:04:05Z" and len(ended) == len("2026-01-02T03:04:05Z")


@pytest.mark.parametrize(
    "path, expected",
    [
        ("runs/a", "runs/a"),
        ("./runs/a/", "runs/a"),
        ("{cwd}/runs/b", "runs/b"),
        ("/elsewhere/runs", "/elsewhere/runs"),
        ("../sibling", "../sibling"),
    ],
)
def test_portable_path(tmp_path, monkeypatch, path, expected):
    monkeypatch.chdir(tmp_path)
    assert provenance.portable_path(path.format(cwd=tmp_path)) == expected
