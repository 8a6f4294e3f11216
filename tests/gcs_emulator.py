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

gcp-storage-emulator (checked: 2026.7.19) ignores the generation preconditions
(``ifGenerationMatch`` / ``ifGenerationNotMatch``) and sends no ``x-goog-generation`` header
with a download. tensorstore's OCDBT driver, which orbax checkpoints use, relies on both (it
writes its manifest with a precondition and reads its generation back); without them a save
failed now and then with "Malformed StorageGeneration". So the server runs from this file
(``python tests/gcs_emulator.py PORT BUCKET``) with object handlers that honour both, as Cloud
Storage does. ``FLATROB_GCS_EMULATOR_LOG=path`` keeps its request log.
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
        self.log = open(os.environ.get("FLATROB_GCS_EMULATOR_LOG", os.devnull), "wb")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), str(self.port), bucket],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
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
                    raise RuntimeError(
                        f"gcp-storage-emulator did not listen on {self.url} "
                        f"within {START_TIMEOUT_S:.0f}s"
                    ) from None
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
                fsspec.register_implementation(protocol, gcsfs.core.GCSFileSystem, clobber=True)
    with contextlib.suppress(ImportError, AttributeError):
        from etils.epath import backend

        backend.fsspec_backend._get_filesystem.cache_clear()


@pytest.fixture(scope="module")
def emulator():
    """One in-memory GCS emulator per test module, with bucket ``BUCKET``."""
    with running_emulator() as server:
        yield server


# --------------------------------------------------------------------------- the server


def _with_generations(handler):
    """An emulator object handler that first checks the request's generation preconditions
    (412 / 304 as Cloud Storage answers) and reports the object's generation in the
    ``x-goog-generation`` header of a download."""
    from http import HTTPStatus

    from gcp_storage_emulator.exceptions import NotFound

    def checked(request, response, storage, *args, **kwargs):
        bucket = request.params.get("bucket_name")
        name = request.params.get("object_id") or (request.query.get("name") or [None])[0]
        current = None  # the live generation; None: no such object
        if bucket and name:
            try:
                current = str(storage.get_file_obj(bucket, name)["generation"])
            except NotFound:
                current = None
        match = request.query.get("ifGenerationMatch", [None])[0]
        not_match = request.query.get("ifGenerationNotMatch", [None])[0]
        if match is not None and match != (current or "0"):
            response.status = HTTPStatus.PRECONDITION_FAILED
            response.json({"error": {"code": 412, "message": "conditionNotMet"}})
            return
        if not_match is not None and current is not None and not_match == current:
            response.status = HTTPStatus.NOT_MODIFIED
            return
        handler(request, response, storage, *args, **kwargs)
        if current is not None and response.status == HTTPStatus.OK:
            response["x-goog-generation"] = current
            response["x-goog-metageneration"] = "1"

    return checked


def serve(port: int, bucket: str) -> None:
    """The emulator, in memory, on 127.0.0.1:port with ``bucket``, until terminated."""
    import logging

    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    logging.basicConfig(level=logging.INFO)
    for _, handlers in server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler.__module__ == objects.__name__:
                handlers[method] = _with_generations(handler)
    objects.insert = _with_generations(objects.insert)  # the router's upload fallback
    server.create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket).run()


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2])
