"""The GCS emulator every test here talks to: one per test session, on 127.0.0.1 only."""

import os

import pytest

from tests.gcs import emulator


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """A running fake-gcs-server with an empty bucket; this process's clients point at it
    (subprocesses get `gcs.env`)."""
    server = emulator.start(str(tmp_path_factory.mktemp("gcs-server")))
    saved = {key: os.environ.get(key) for key in server.env}
    os.environ.update(server.env)
    yield server
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture
def gcs_dir(gcs, request):
    """A fresh gs:// prefix for one test."""
    name = request.node.name.replace("[", "-").replace("]", "")
    return f"gs://{gcs.bucket}/{request.module.__name__.rsplit('.', 1)[-1]}/{name}"
