"""`--config.data.dir=gs://...`: a dataset generated once is kept in the bucket and read back
on another machine (a fresh local staging directory) record for record."""

import numpy as np

from lenggen.data import dataset
from lenggen.rundir import storage
from lenggen.tasks.base import SPLITS
from tests.data.fake_task import FakeCopy


def test_a_dataset_in_a_bucket_is_uploaded_once_and_read_back_elsewhere(gcs_dir, tmp_path):
    data_dir = f"{gcs_dir}/datasets"
    first = dataset.prepare(FakeCopy(), data_dir, staging_dir=tmp_path / "machine-a")
    remote = f"{data_dir}/{dataset.LenggenTask.name}/{dataset.config_name(FakeCopy())}/1.0.0"
    uploaded = sorted(p.name for p in storage.resolve_fresh(remote).iterdir())
    local = sorted(p.name for p in first.directory.iterdir())
    assert uploaded == local and "dataset_info.json" in uploaded
    assert str(first.directory).startswith(
        str(tmp_path / "machine-a" / storage.bucket_and_key(data_dir)[0])
    )

    second = dataset.prepare(FakeCopy(), data_dir, staging_dir=tmp_path / "machine-b")
    assert second.directory != first.directory and second.longest == first.longest
    for split in SPLITS:
        assert len(second.splits[split]) == len(first.splits[split]) > 0
        for index in range(len(first.splits[split])):
            a, b = first.splits[split][index], second.splits[split][index]
            assert a["source"] == b["source"] and a["target"] == b["target"]
            np.testing.assert_array_equal(a["tokens"], b["tokens"])
    # Machine b downloaded the files; it generated nothing (the same bytes as machine a's).
    for name in local:
        assert (second.directory / name).read_bytes() == (first.directory / name).read_bytes()
