"""When and how jax.distributed is started (the start function is recorded, not called)."""

import pytest

from lenggen import distributed


class _Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)


@pytest.mark.parametrize(
    "environ, cluster",
    [
        ({}, None),
        ({"TPU_WORKER_HOSTNAMES": "10.0.0.2"}, None),  # a one-host TPU VM: nothing to start
        ({"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"}, "Cloud TPU"),
        ({"SLURM_NTASKS": "8", "SLURM_PROCID": "3"}, "SLURM"),
        ({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, None),
        ({"OMPI_COMM_WORLD_SIZE": "4"}, "Open MPI"),
    ],
)
def test_cluster_detection(environ, cluster):
    assert distributed.detected_cluster(environ) == cluster


def test_explicit_flags_start_the_runtime_with_them():
    start = _Recorder()
    text = distributed.initialize("127.0.0.1:1234", 2, 1, {}, start=start)
    assert start.calls == [
        dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=1)
    ]
    assert text == "process 1 of 2 (coordinator 127.0.0.1:1234)"


def test_single_process_starts_nothing():
    start = _Recorder()
    assert distributed.initialize(None, None, None, {}, start=start) == "single process"
    assert start.calls == []


def test_a_detected_cluster_starts_with_auto_detection():
    start = _Recorder()
    distributed.initialize(None, None, None, {"OMPI_COMM_WORLD_SIZE": "2"}, start=start)
    assert start.calls == [{}]


@pytest.mark.parametrize(
    "flags, message",
    [
        (("127.0.0.1:1", None, 0), "go together"),
        ((None, 2, None), "go together"),
        (("127.0.0.1:1", 2, 2), r"--process_id=2 is not in \[0, --num_processes=2\)"),
    ],
)
def test_incomplete_or_inconsistent_flags_are_refused(flags, message):
    with pytest.raises(distributed.DistributedFlagsError, match=message):
        distributed.initialize(*flags, {}, start=_Recorder())
