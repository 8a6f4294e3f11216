"""A local Google Cloud Storage server for tests: gcp-storage-emulator on 127.0.0.1, in memory.

``emulator`` (the pytest fixture, module-scoped) starts one server with a bucket ``BUCKET``,
points every client library at it through the environment (this process's and, through
``Emulator.env()``, subprocesses'), and stops it at the end; start-up and shutdown are
bounded. Nothing leaves 127.0.0.1:

- gcsfs and google-cloud-storage: ``STORAGE_EMULATOR_HOST`` (both then use anonymous
  credentials); tensorstore (orbax's arrays): ``TENSORSTORE_GCS_HTTP_URL`` with
  ``GOOGLE_AUTH_TOKEN_FOR_TESTING``; array_record (tfds data): ``CLOUD_STORAGE_EMULATOR_ENDPOINT``.
- No cloud metadata server probe: ``NO_GCE_CHECK`` and ``GCE_METADATA_HOST``/``_IP`` pointing
  at a closed loopback port.
- gcsfs 2026.x asks a gRPC control API for the bucket type, which the emulator does not serve
  (60 s per call before it falls back): ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` turns that
  probe off.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time

import pytest

BUCKET = "bkt"
START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _closed_port() -> int:
    """A loopback port nothing listens on (the metadata server address)."""
    return _free_port()


class Emulator:
    """A running emulator: ``url``, ``bucket``, ``env()`` for subprocesses, ``stop()``."""

    def __init__(self, bucket: str = BUCKET):
        self.bucket = bucket
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        metadata = f"127.0.0.1:{_closed_port()}"
        self.variables = {
            "STORAGE_EMULATOR_HOST": self.url,
            "TENSORSTORE_GCS_HTTP_URL": self.url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "x",
            "CLOUD_STORAGE_EMULATOR_ENDPOINT": self.url,
            "NO_GCE_CHECK": "True",
            "GCE_METADATA_HOST": metadata,
            "GCE_METADATA_IP": metadata,
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            "GOOGLE_CLOUD_PROJECT": "test-project",
        }
        self.log = open(os.devnull, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
             "--port", str(self.port), "--in-memory", "--default-bucket", bucket],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gcp-storage-emulator exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"gcp-storage-emulator did not listen on {self.url} "
                                       f"within {START_TIMEOUT_S:.0f}s") from None
                time.sleep(0.1)

    def uri(self, *parts: str) -> str:
        return "/".join([f"gs://{self.bucket}", *parts])

    def env(self, base: dict | None = None) -> dict:
        """``base`` (default: this process's environment) plus the emulator's variables."""
        env = dict(os.environ if base is None else base)
        env.update(self.variables)
        return env

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


@contextlib.contextmanager
def running_emulator(bucket: str = BUCKET):
    """An emulator with this process's environment pointed at it, restored afterwards."""
    server = Emulator(bucket)
    saved = {k: os.environ.get(k) for k in server.variables}
    os.environ.update(server.variables)
    _drop_gcsfs_instances()
    try:
        yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _drop_gcsfs_instances()
        server.stop()


def _drop_gcsfs_instances() -> None:
    """gcsfs and epath cache filesystem objects (with their endpoint); drop them so the next
    use reads the current environment.

    gcsfs reads GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT once, when it is imported: if it was
    imported before the emulator's environment was set (another test used gs:// first), its
    bucket-type-probing filesystem is registered for gs://; register the plain one instead."""
    with contextlib.suppress(ImportError):
        import fsspec
        import gcsfs
        import gcsfs.core

        gcsfs.GCSFileSystem.clear_instance_cache()
        gcsfs.core.GCSFileSystem.clear_instance_cache()
        if os.environ.get("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "true").lower() == "false":
            for protocol in ("gs", "gcs"):
                fsspec.register_implementation(protocol, gcsfs.core.GCSFileSystem,
                                               clobber=True)
    with contextlib.suppress(ImportError, AttributeError):
        from etils.epath import backend

        backend.fsspec_backend._get_filesystem.cache_clear()


@pytest.fixture(scope="module")
def emulator():
    """One in-memory GCS emulator per test module, with bucket ``BUCKET``."""
    with running_emulator() as server:
        yield server
