"""Fetching zoo checkpoints (``zoo.ZooEntry``) once into a local cache directory, verified.

``fetch_entry(entry, cache_dir=None)`` returns the local path of the entry's file,
``<cache>/<entry.filename>``: the cached file when it is there, else a fresh download. The
cache is ``cache_dir``, else ``$FLATROB_ZOO_CACHE``, else ``~/.cache/flatrob_jax/zoo``; it
must be a local directory. Offline (or when a download fails), the error names the exact file
to place there and the URL to get it from, so a file downloaded by hand elsewhere can be
dropped in.

Verification, on every fetch (cache hit or download):

- an entry with a published sha256 must match it;
- an entry with a published sha256 prefix (torchvision's file names) must start with it;
- an entry without a published checksum (all of RobustBench's) is verified
  **trust-on-first-use**: the sha256 of the first file seen (downloaded, or placed in the
  cache by hand) is recorded in ``<cache>/zoo-lock.json``, and every later fetch must match
  the recorded digest. This detects a changed or corrupted file later on; it cannot tell
  whether the first download was the file the publisher meant. Delete the lock entry (and the
  file) to accept a new one.

A download goes to a temporary file next to its destination and is renamed into place only
after it passed verification, so the cache never holds a partial or rejected file.

Google Drive (RobustBench's host) answers a large file with an HTML page ("can't scan this
file for viruses") instead of the file; ``http_download`` follows that page's download form
(the confirm-token step) once. If Drive still serves a page (quota exceeded, access denied,
a changed page), the error says to download the file by hand in a browser and place it at the
path it names.
"""

from __future__ import annotations

import datetime
import html.parser
import http.cookiejar
import json
import os
import urllib.error
import urllib.parse
import urllib.request

from flatrob_jax import fileio
from flatrob_jax.torch_import import loading

CACHE_ENV = "FLATROB_ZOO_CACHE"
DEFAULT_CACHE = os.path.join("~", ".cache", "flatrob_jax", "zoo")
LOCK_FILE = "zoo-lock.json"
_USER_AGENT = "flatrob_jax (zoo fetch; python urllib)"
_CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A zoo file could not be downloaded; the message says where to place it by hand."""


def cache_directory(cache_dir: str | None = None) -> str:
    """``cache_dir``, else ``$FLATROB_ZOO_CACHE``, else ``~/.cache/flatrob_jax/zoo``."""
    chosen = cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    if fileio.is_uri(chosen):
        raise ValueError(f"zoo cache {chosen!r}: the cache must be a local directory")
    return os.path.abspath(os.path.expanduser(chosen))


def local_path(entry, cache_dir: str | None = None) -> str:
    """Where ``entry``'s file is (or will be) in the cache."""
    return os.path.join(cache_directory(cache_dir), *entry.filename.split("/"))


def read_lock(cache_dir: str | None = None) -> dict:
    """``{filename: {'sha256', 'url', 'recorded_at'}}`` from the cache's lock file."""
    path = os.path.join(cache_directory(cache_dir), LOCK_FILE)
    if not fileio.exists(path):
        return {}
    try:
        return json.loads(fileio.read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"zoo lock file {path!r} is not valid JSON: {e}; fix or delete it") from e


def _record(cache: str, entry, digest: str) -> None:
    lock = read_lock(cache)
    lock[entry.filename] = {
        "sha256": digest,
        "url": entry.url,
        "entry": entry.name,
        "recorded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    fileio.atomic_write_text(
        os.path.join(cache, LOCK_FILE), json.dumps(lock, indent=2, sort_keys=True)
    )


def verify(entry, path: str, cache_dir: str | None = None) -> str:
    """Check the file ``path`` against ``entry``'s checksum (see the module docstring);
    return its sha256. A file without a published checksum or lock record gets one."""
    cache = cache_directory(cache_dir)
    digest = loading.sha256_of(path)
    recorded = read_lock(cache).get(entry.filename, {}).get("sha256")
    if entry.sha256 is not None:
        expected, how = entry.sha256.lower(), "the published sha256"
        ok = digest == expected
    elif entry.sha256_prefix is not None:
        expected, how = entry.sha256_prefix.lower() + "...", "the sha256 prefix in its file name"
        ok = digest.startswith(entry.sha256_prefix.lower())
    elif recorded is not None:
        expected, how = recorded, f"the sha256 recorded on first download in {LOCK_FILE}"
        ok = digest == recorded
    else:
        ok, expected, how = True, None, None
    if not ok:
        raise loading.ChecksumMismatch(
            f"zoo entry {entry.name}: file {path!r} has sha256 {digest}, expected {expected} "
            f"({how}): a different or corrupted file. Delete it to download it again."
        )
    if recorded is None:
        _record(cache, entry, digest)
    elif recorded != digest:  # a published checksum passed, but the lock disagrees
        raise loading.ChecksumMismatch(
            f"zoo entry {entry.name}: file {path!r} has sha256 {digest}, but {LOCK_FILE} "
            f"recorded {recorded}; remove that record if the new file is the right one"
        )
    return digest


def fetch_entry(entry, cache_dir: str | None = None, *, download=None, log=print) -> str:
    """The verified local path of ``entry``'s file, downloading it once if needed.

    ``download(url, dest)``: writes the file at ``url`` to ``dest`` (default
    ``http_download``); tests pass a fake one."""
    path = local_path(entry, cache_dir)
    if fileio.exists(path):
        verify(entry, path, cache_dir)
        return path
    download = download or http_download
    fileio.makedirs(os.path.dirname(path))
    tmp = f"{path}.part-{os.getpid()}"
    log(f"zoo: downloading {entry.name} from {entry.url} to {path}")
    try:
        try:
            download(entry.url, tmp)
        except (OSError, FetchError) as e:  # URLError and HTTPError are OSErrors
            raise FetchError(
                f"cannot download zoo entry {entry.name} from {entry.url} "
                f"({type(e).__name__}: {e}). Without a network, download the file "
                f"elsewhere and place it at {path} (the URL above); it is then verified "
                f"and used."
            ) from e
        verify(entry, tmp, cache_dir)
        os.replace(tmp, path)
    finally:
        fileio.remove(tmp)
    return path


class _DownloadForm(html.parser.HTMLParser):
    """The action and hidden fields of Google Drive's 'download anyway' form."""

    def __init__(self):
        super().__init__()
        self.action, self.fields, self._inside = None, {}, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and self.action is None and "download" in (attrs.get("action") or ""):
            self.action, self._inside = attrs["action"], True
        elif tag == "input" and self._inside and attrs.get("name"):
            self.fields[attrs["name"]] = attrs.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._inside = False


def confirm_url(page: str, page_url: str) -> str | None:
    """The URL that Google Drive's virus-scan warning page's download form submits to (with
    its confirm token), or None when the page has no such form."""
    form = _DownloadForm()
    form.feed(page)
    if form.action is None:
        return None
    action = urllib.parse.urljoin(page_url, form.action)
    return f"{action}?{urllib.parse.urlencode(form.fields)}" if form.fields else action


def http_download(url: str, dest: str, *, timeout: float = 60.0) -> None:
    """Write the file at ``url`` to ``dest``; Google Drive's confirm page is followed once."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    opener.addheaders = [("User-Agent", _USER_AGENT)]
    for attempt in range(2):
        with opener.open(url, timeout=timeout) as response:
            if not response.headers.get_content_type().startswith("text/html"):
                with fileio.open(dest, "wb") as f:
                    while block := response.read(_CHUNK):
                        f.write(block)
                return
            page = response.read().decode("utf-8", "replace")
            next_url = confirm_url(page, response.geturl()) if attempt == 0 else None
        if next_url is None:
            break
        url = next_url
    raise FetchError(
        f"{url} served a web page instead of the file (Google Drive's quota or access "
        f"page, or a changed confirm page): download the file by hand in a browser"
    )
