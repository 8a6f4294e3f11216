"""The one file layer: every read, write, listing, existence check, atomic write and append of
the library goes through here, for local paths and URIs (``gs://bucket/...``) alike.

Built on ``etils.epath``, what orbax, tfds and JAX's compilation cache use, so one set of
credentials and one installation serve them all. Paths are plain strings in and out; a URI is
never turned into a local path: URIs are joined as text (:func:`join`) and a path is made
absolute only when it is local (:func:`absolute`). orbax, tensorboardX and tfds get the URI
as it is.

What is atomic where:

- **Local disk (and NFS / gcsfuse mounts, which look local):** :func:`atomic_write_bytes`
  writes a temporary file in the same directory, fsyncs it and renames it over the target
  (``os.replace``), so a reader sees the old or the new file, never part of one, and a failed
  or interrupted write leaves the old file as it was. :class:`Appender` appends a line with
  one write and flushes it.
- **Object stores (gs://):** an object upload is atomic by itself (a reader sees the old or
  the new object), so :func:`atomic_write_bytes` uploads the object in one request; there is
  no rename and no temporary object. An object cannot be appended to: :class:`Appender`
  *buffers and rewrites* the object (the whole text is kept in memory, read back from the
  object when it is opened, and uploaded again on ``flush()`` and at most every
  ``min_interval_s`` seconds otherwise). We chose rewriting over numbered parts so that
  ``metrics.jsonl`` stays one file that every reader reads the same way; a metrics log is
  small (one line per logged step), so rewriting it costs little.

A URI needs the optional extra ``flatrob_jax[gcp]`` (gcsfs, through which epath reaches
gs:// without TensorFlow; google-cloud-storage, through which tensorboardX writes event
files). Without it the first use of a gs:// path, which the entry points make before any work
(:func:`require_support`), raises :class:`MissingExtraError` naming the path and the pip
command. Failures of a remote operation raise :class:`StorageError` (an ``OSError``) naming
the path; a missing file or object raises ``FileNotFoundError`` naming it.

This module is the bottom layer: it imports nothing from flatrob_jax.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import posixpath
import re
import tempfile
import time

GCP_EXTRA = "pip install 'flatrob_jax[gcp]'"
# The packages a gs:// path needs, and what for.
_GS_PACKAGES = (
    ("gcsfs", "epath's gs:// backend without TensorFlow"),
    ("google.cloud.storage", "TensorBoard event files on gs:// (tensorboardX)"),
)
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_supported: set = set()  # schemes whose packages imported fine


class MissingExtraError(ImportError):
    """A URI was given but the packages that reach it are not installed."""


class StorageError(OSError):
    """A remote read, write or listing failed (bucket missing or unreachable, no access)."""


# --------------------------------------------------------------------------- paths


def _str(path) -> str:
    return os.fspath(path)


def scheme(path) -> str | None:
    """The URI scheme ('gs') of ``path``, or None for a local path."""
    match = _URI.match(_str(path))
    return match.group(1).lower() if match else None


def is_uri(path) -> bool:
    """True for ``scheme://...`` (gs://, s3://, ...), False for a local path."""
    return scheme(path) is not None


def require_support(*paths) -> None:
    """Fail now, before any work, if a path is a URI whose packages are not installed
    (``None`` and ``''`` are skipped). gs:// needs gcsfs and google-cloud-storage."""
    for path in paths:
        if not path:
            continue
        kind = scheme(path)
        if kind != "gs" or kind in _supported:
            continue
        for module, purpose in _GS_PACKAGES:
            try:
                __import__(module)
            except ImportError as e:
                raise MissingExtraError(
                    f"{_str(path)!r} is a gs:// path, which needs the optional extra "
                    f"flatrob_jax[gcp] ({module} is not installed: {purpose}). Install it "
                    f"with: {GCP_EXTRA}"
                ) from e
        _supported.add(kind)


def as_path(path):
    """``path`` as an ``etils.epath.Path`` (after :func:`require_support`)."""
    from etils import epath

    require_support(path)
    return epath.Path(_str(path))


def join(base, *parts) -> str:
    """``base/part/...`` as a string; a URI keeps its ``scheme://`` (posix separators)."""
    base = _str(base)
    parts = [_str(p) for p in parts]
    if is_uri(base):
        return posixpath.join(base, *parts) if parts else base
    return os.path.join(base, *parts)


def absolute(path) -> str:
    """An absolute local path; a URI unchanged (never turned into a local path)."""
    path = _str(path)
    return path if is_uri(path) else os.path.abspath(path)


def basename(path) -> str:
    """The last component ('gs://b/run/' -> 'run')."""
    path = _str(path).rstrip("/")
    return posixpath.basename(path) if is_uri(path) else os.path.basename(path)


def dirname(path) -> str:
    """The parent ('gs://b/run/x.json' -> 'gs://b/run'); a bucket root stays as it is."""
    path = _str(path).rstrip("/")
    if not is_uri(path):
        return os.path.dirname(path)
    head = _URI.match(path).group(0)
    rest = path[len(head) :]
    return head + posixpath.dirname(rest) if "/" in rest else path


# --------------------------------------------------------------------------- errors


@contextlib.contextmanager
def _remote_errors(action: str, path):
    """Turn a remote backend's exception into one clear error naming the path (the cause is
    kept). Local paths raise the OS's own errors, which already name the path."""
    if not is_uri(path):
        yield
        return
    try:
        yield
    except (MissingExtraError, StorageError):
        raise
    except FileNotFoundError as e:
        raise FileNotFoundError(
            errno.ENOENT,
            f"cannot {action} {_str(path)!r}: it does not exist (or its bucket "
            f"does not) ({type(e).__name__}: {str(e)[:300]})",
            _str(path),
        ) from e
    except ImportError as e:
        raise MissingExtraError(
            f"cannot {action} {_str(path)!r}: {e}. Install the storage extra with: {GCP_EXTRA}"
        ) from e
    except Exception as e:
        raise StorageError(
            f"cannot {action} {_str(path)!r} ({type(e).__name__}: {str(e)[:300]}). Check "
            f"that the bucket exists, that this machine can reach it, and that its "
            f"credentials may {action} it."
        ) from e


def _invalidate(path) -> None:
    """Drop gcsfs's listing cache for ``path`` so existence checks and listings see what
    another process (the training run, another host) wrote since."""
    if scheme(path) not in ("gs", "gcs"):
        return
    try:
        from etils.epath import backend

        backend.fsspec_backend.fs(_str(path)).invalidate_cache()
    except Exception:  # a cache that cannot be dropped only means a slower first listing
        pass


# --------------------------------------------------------------------------- queries


def exists(path) -> bool:
    """Whether a file, object or directory (a prefix with objects, on gs://) is there."""
    with _remote_errors("check", path):
        _invalidate(path)
        return as_path(path).exists()


def isdir(path) -> bool:
    with _remote_errors("check", path):
        _invalidate(path)
        return as_path(path).is_dir()


def isfile(path) -> bool:
    with _remote_errors("check", path):
        _invalidate(path)
        return as_path(path).is_file()


def listdir(path) -> list:
    """The sorted names (not paths) in a directory / under a prefix."""
    with _remote_errors("list", path):
        _invalidate(path)
        return sorted(p.name for p in as_path(path).iterdir())


def makedirs(path) -> str:
    """Create a local directory and its parents (exist_ok). On an object store directories
    do not exist, so nothing is created (the first object written creates the prefix)."""
    if is_uri(path):
        require_support(path)
        return _str(path)
    os.makedirs(_str(path), exist_ok=True)
    return _str(path)


# --------------------------------------------------------------------------- reading


def open(path, mode: str = "r", *, newline: str | None = None):  # noqa: A001 (the file layer)
    """A file object for ``path``: modes 'r', 'rb', 'w', 'wb' (text is UTF-8). Writing
    through it is not atomic; use :func:`atomic_write_bytes` for files others read."""
    if mode not in ("r", "rb", "w", "wb"):
        raise ValueError(f"mode {mode!r}: allowed 'r', 'rb', 'w', 'wb' (appending: Appender)")
    action = "read" if "r" in mode else "write"
    with _remote_errors(action, path):
        if "w" in mode and dirname(path):
            makedirs(dirname(path))
        binary = as_path(path).open(mode.replace("b", "") + "b")
    if "b" in mode:
        return binary
    return io.TextIOWrapper(binary, encoding="utf-8", newline=newline)


def read_bytes(path) -> bytes:
    with _remote_errors("read", path):
        return as_path(path).read_bytes()


def read_text(path) -> str:
    return read_bytes(path).decode("utf-8")


# --------------------------------------------------------------------------- writing


def atomic_write_bytes(path, data: bytes) -> str:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never part:
    locally a temporary file in the same directory, fsync, then ``os.replace`` (on any error
    the temporary file is removed and ``path`` is untouched); on an object store one upload
    (atomic by itself). Returns ``path`` (local: absolute)."""
    if is_uri(path):
        with _remote_errors("write", path):
            as_path(path).write_bytes(bytes(data))
        return _str(path)
    path = os.path.abspath(_str(path))
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_write_text(path, text: str) -> str:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def jsonable(value):
    """``value`` as plain JSON data, the one sanitiser of every JSON file the library writes:
    numpy scalars and arrays (and anything with ``__array__``, e.g. JAX arrays) become Python
    numbers and lists, tuples become lists, mapping keys become strings, and a non-finite float
    (NaN, +-inf) becomes None (null), so the file is strict JSON."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    if hasattr(value, "__array__") and not isinstance(value, (int, float)):
        import numpy as np

        array = np.asarray(value)
        return jsonable(array.item() if array.ndim == 0 else array.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps_json(value, **kwargs) -> str:
    """Strict JSON text of :func:`jsonable` ``(value)`` (``kwargs`` as ``json.dumps``'s)."""
    return json.dumps(jsonable(value), allow_nan=False, **kwargs)


def write_json(path, value, **kwargs) -> str:
    """:func:`atomic_write_text` of :func:`dumps_json` ``(value, **kwargs)``."""
    return atomic_write_text(path, dumps_json(value, **kwargs))


def remove(path, missing_ok: bool = True) -> None:
    """Delete one file or object."""
    with _remote_errors("delete", path):
        p = as_path(path)
        if missing_ok and not p.exists():
            return
        p.unlink()


def rmtree(path, missing_ok: bool = True) -> None:
    """Delete a directory / every object under a prefix."""
    with _remote_errors("delete", path):
        _invalidate(path)
        p = as_path(path)
        if missing_ok and not p.exists():
            return
        p.rmtree()


def copytree(src, dst) -> str:
    """Copy every file under ``src`` to the same relative place under ``dst`` (either may be
    a URI: uploading a prepared dataset into a bucket, downloading results)."""
    src, dst = _str(src), _str(dst)
    with _remote_errors("list", src):
        _invalidate(src)
        entries = list(as_path(src).iterdir())
    for entry in entries:
        source, target = join(src, entry.name), join(dst, entry.name)
        if isdir(source):
            copytree(source, target)
        else:
            atomic_write_bytes(target, read_bytes(source))
    return dst


def make_temp_dir(parent, prefix: str) -> str:
    """A new private directory inside the local directory ``parent`` (for write-then-rename
    of a whole directory). Local only: an object store has no rename, so callers write into
    the final place there instead."""
    if is_uri(parent):
        raise ValueError(f"make_temp_dir needs a local directory, got the URI {_str(parent)!r}")
    os.makedirs(_str(parent), exist_ok=True)
    return tempfile.mkdtemp(dir=_str(parent), prefix=prefix)


def rename_dir(src, dst) -> None:
    """Rename the local directory ``src`` to ``dst`` (an empty ``dst`` is replaced). Local
    only, like :func:`make_temp_dir`."""
    if is_uri(src) or is_uri(dst):
        raise ValueError(f"rename_dir is local only, got {_str(src)!r} -> {_str(dst)!r}")
    if os.path.isdir(dst):
        os.rmdir(dst)  # empty, or this raises: nothing is overwritten
    os.rename(src, dst)


# --------------------------------------------------------------------------- appending


class Appender:
    """Append text (JSON lines) to one file; :meth:`rewrite` replaces it atomically.

    Local: each :meth:`append` is one write of the text to the file opened for appending,
    flushed, as before. Object store: no append exists, so the whole text is kept in memory
    (read back from the object when this is created, so nothing written earlier is lost) and
    the object is rewritten on :meth:`flush` and on an append at least ``min_interval_s``
    after the last upload. The caller flushes at the points that must be durable (the
    trainer: before each checkpoint and at the end), so a resumed run never misses a line
    of a step at or before its checkpoint.
    """

    def __init__(self, path, min_interval_s: float = 30.0):
        self.path = _str(path)
        self.remote = is_uri(self.path)
        self.min_interval_s = min_interval_s
        self._text = None
        self._dirty = False
        self._last_upload = float("-inf")
        if self.remote:
            self._text = read_text(self.path) if exists(self.path) else ""

    def read(self) -> str:
        """The current text ('' when the file does not exist yet)."""
        if self.remote:
            return self._text
        return read_text(self.path) if exists(self.path) else ""

    def append(self, text: str) -> None:
        if not self.remote:
            makedirs(os.path.dirname(os.path.abspath(self.path)))
            with io.open(self.path, "a", encoding="utf-8") as f:
                f.write(text)
                f.flush()
            return
        self._text += text
        self._dirty = True
        if time.monotonic() - self._last_upload >= self.min_interval_s:
            self.flush()

    def rewrite(self, text: str) -> None:
        """Replace the whole content, atomically."""
        atomic_write_text(self.path, text)
        if self.remote:
            self._text, self._dirty = text, False
            self._last_upload = time.monotonic()

    def flush(self) -> None:
        """Make everything appended so far durable (a no-op locally: appends are written)."""
        if self.remote and self._dirty:
            atomic_write_text(self.path, self._text)
            self._dirty = False
            self._last_upload = time.monotonic()


__all__ = [
    "Appender",
    "GCP_EXTRA",
    "MissingExtraError",
    "StorageError",
    "absolute",
    "as_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "basename",
    "copytree",
    "dirname",
    "exists",
    "is_uri",
    "isdir",
    "isfile",
    "join",
    "listdir",
    "make_temp_dir",
    "makedirs",
    "open",
    "read_bytes",
    "read_text",
    "remove",
    "rename_dir",
    "require_support",
    "rmtree",
    "scheme",
]
