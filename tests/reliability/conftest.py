"""Fixtures of the fault tests: the tiny experiment's dataset and its uninterrupted run."""

import pytest

from lenggen.train import loop
from tests.reliability import runs


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("datasets"))


@pytest.fixture(scope="session")
def reference(tmp_path_factory, data_dir):
    """(workdir, results payload) of the tiny experiment run without interruption."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    payload = loop.run(runs.config_for(data_dir), workdir)
    return workdir, payload
