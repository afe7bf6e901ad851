"""When and how jax.distributed is started (the start function is recorded, not called; the
Cloud TPU metadata server is a fake lookup, or a local HTTP server: no test leaves localhost)."""

import http.server
import threading

import pytest

from lenggen import distributed


class _Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)


def _metadata(**attributes):
    """A fake metadata lookup: the attributes given (dashes for underscores), else None (404);
    it records the keys asked for."""
    asked = []

    def lookup(key):
        asked.append(key)
        return attributes.get(key.replace("-", "_"))

    lookup.asked = asked
    return lookup


def _no_network(key):
    raise AssertionError(f"asked the metadata server for {key!r} off a TPU VM")


# A v4-32 slice: 4 workers in the new endpoint format (hostnames) and the old one (name:id:ip).
V4_32 = dict(
    accelerator_type="v4-32",
    agent_worker_number="2",
    worker_network_endpoints="t1k-w-0,t1k-w-1,t1k-w-2,t1k-w-3",
)
V4_32_OLD = dict(
    V4_32,
    worker_network_endpoints=(
        "unknown:0:10.130.0.2,unknown:1:10.130.0.3,unknown:2:10.130.0.4,unknown:3:10.130.0.5"
    ),
)


@pytest.mark.parametrize(
    "environ, cluster",
    [
        ({}, None),
        ({"TPU_WORKER_HOSTNAMES": "10.0.0.2"}, None),  # a one-host TPU pod on GKE
        ({"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"}, "Cloud TPU on GKE"),
        ({"TPU_PROCESS_ADDRESSES": "10.0.0.2:8476,10.0.0.3:8476"}, "Cloud TPU on GKE"),
        ({"SLURM_NTASKS": "8", "SLURM_PROCID": "3"}, "SLURM"),
        ({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, None),
        ({"OMPI_COMM_WORLD_SIZE": "4"}, "Open MPI"),
    ],
)
def test_cluster_detection_from_the_environment_off_tpu_vms(environ, cluster):
    assert (
        distributed.detected_cluster(environ, is_tpu_vm=lambda: False, metadata=_no_network)
        == cluster
    )


@pytest.mark.parametrize(
    "attributes, environ, cluster",
    [
        # What a `gcloud compute tpus tpu-vm ssh --worker=all` shell sees: no TPU_* variable.
        (V4_32, {}, "Cloud TPU VM v4-32, 4 processes"),
        (V4_32_OLD, {}, "Cloud TPU VM v4-32, 4 processes"),
        # A single-host TPU VM (v4-8: one worker) runs one process: nothing to start.
        (dict(accelerator_type="v4-8", worker_network_endpoints="t1k-w-0"), {}, None),
        # Multislice: 2 slices of one worker each are 2 processes (environment or tpu-env).
        (
            dict(accelerator_type="v5litepod-8", worker_network_endpoints="w-0"),
            {"MEGASCALE_NUM_SLICES": "2"},
            "Cloud TPU VM v5litepod-8, 2 processes",
        ),
        (
            dict(
                accelerator_type="v5litepod-8",
                worker_network_endpoints="w-0",
                tpu_env="ZONE: 'us-west4-a'\nMEGASCALE_NUM_SLICES: '3'\n",
            ),
            {},
            "Cloud TPU VM v5litepod-8, 3 processes",
        ),
        # A GCE VM that is no TPU VM (no accelerator-type attribute).
        ({}, {}, None),
    ],
)
def test_cloud_tpu_vm_detection_reads_the_metadata_server(attributes, environ, cluster):
    lookup = _metadata(**attributes)
    assert distributed.detected_cluster(environ, is_tpu_vm=lambda: True, metadata=lookup) == cluster
    assert lookup.asked[0] == "accelerator-type"


def test_tpu_skip_mds_query_and_slurm_need_no_metadata():
    environ = {"TPU_SKIP_MDS_QUERY": "1", "SLURM_NTASKS": "2", "SLURM_PROCID": "0"}
    assert (
        distributed.detected_cluster(environ, is_tpu_vm=lambda: True, metadata=_no_network)
        == "SLURM"
    )


def test_a_tpu_vm_is_a_gce_vm_with_tpu_devices(tmp_path):
    path, dev = tmp_path / "product_name", tmp_path / "dev"
    (dev / "vfio").mkdir(parents=True)
    (dev / "vfio" / "vfio").touch()  # the VFIO control file: present on many machines
    path.write_text("Google Compute Engine\n")
    assert not distributed.on_tpu_vm(str(path), str(dev))  # a GCE VM without TPUs
    (dev / "accel0").touch()  # v4
    assert distributed.on_tpu_vm(str(path), str(dev))
    (dev / "accel0").unlink()
    (dev / "vfio" / "0").touch()  # v5e and later: a VFIO group per chip
    assert distributed.on_tpu_vm(str(path), str(dev))
    path.write_text("KVM\n")
    assert not distributed.on_tpu_vm(str(path), str(dev))
    assert not distributed.on_tpu_vm(str(tmp_path / "missing"), str(dev))


class _MetadataHandler(http.server.BaseHTTPRequestHandler):
    attributes = {"accelerator-type": "v5litepod-16", "worker-network-endpoints": "a,b,c,d"}
    headers_seen = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.headers_seen.append(self.headers.get("Metadata-Flavor"))
        key = self.path.rsplit("/", 1)[-1]
        prefix = "/computeMetadata/v1/instance/attributes/"
        if not self.path.startswith(prefix) or key not in self.attributes:
            self.send_error(404)
            return
        body = self.attributes[key].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def metadata_server():
    server = http.server.HTTPServer(("127.0.0.1", 0), _MetadataHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_gce_metadata_over_http(metadata_server):
    environ = {"GCE_METADATA_IP": metadata_server}
    assert distributed.gce_metadata("accelerator-type", environ) == "v5litepod-16"
    assert distributed.gce_metadata("tpu-env", environ) is None  # 404: no such attribute
    assert set(_MetadataHandler.headers_seen) == {"Google"}
    # The whole decision over HTTP, as on a worker of a v5litepod-16 (4 hosts).
    assert distributed.detected_cluster(environ, is_tpu_vm=lambda: True) == (
        "Cloud TPU VM v5litepod-16, 4 processes"
    )


def test_an_unreachable_metadata_server_is_one_clear_error():
    environ = {"GCE_METADATA_IP": "127.0.0.1:9"}  # the discard port: connection refused
    with pytest.raises(
        distributed.DistributedFlagsError,
        match=r"The GCE metadata server \(127.0.0.1:9\) did not answer for "
        r"'accelerator-type' \(.*\): cannot tell how many workers",
    ):
        distributed.gce_metadata("accelerator-type", environ, tries=2, timeout=1.0)


def test_explicit_flags_start_the_runtime_with_them():
    start = _Recorder()
    text = distributed.initialize(
        "127.0.0.1:1234", 2, 1, {}, start=start, is_tpu_vm=lambda: True, metadata=_no_network
    )
    assert start.calls == [
        dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=1)
    ]
    assert text == "process 1 of 2 (coordinator 127.0.0.1:1234)"


def test_single_process_starts_nothing():
    start = _Recorder()
    assert (
        distributed.initialize(None, None, None, {}, start=start, is_tpu_vm=lambda: False)
        == "single process"
    )
    one_host = _metadata(accelerator_type="v4-8", worker_network_endpoints="w-0")
    assert (
        distributed.initialize(
            None, None, None, {}, start=start, is_tpu_vm=lambda: True, metadata=one_host
        )
        == "single process"
    )
    assert start.calls == []


@pytest.mark.parametrize(
    "environ, is_tpu_vm, metadata",
    [
        ({"OMPI_COMM_WORLD_SIZE": "2"}, False, _no_network),
        ({}, True, _metadata(**V4_32)),  # a pod worker: JAX reads the same metadata itself
    ],
)
def test_a_detected_cluster_starts_with_jax_own_detection(environ, is_tpu_vm, metadata):
    start = _Recorder()
    distributed.initialize(
        None, None, None, environ, start=start, is_tpu_vm=lambda: is_tpu_vm, metadata=metadata
    )
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
