"""Where per-tar indexes live and when they are stale: cache keys, paths and publication.

An index is keyed by its tar's identity: the base name, the size and the modification stamp
(the ETag on object stores, else the mtime). Locations are left out, so a bucket mounted at
another path on the workers, or copied with its stamps, keeps its indexes. A changed tar gets
a new key, hence a new index; stale ones are never read again (delete the folder to reclaim
them). ``cache_dir`` may be a local folder every worker sees or any fsspec URL.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import tempfile
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np

from synth.errors import SourceError

#: Bumped whenever the index layout or what it holds changes; old entries are then ignored.
INDEX_VERSION = 1

#: Fields that stamp a file's version, in order of preference (ETag: content-derived on S3/GCS).
_STAMPS = (
    "ETag",
    "etag",
    "e_tag",
    "md5Hash",
    "mtime",
    "LastModified",
    "last_modified",
    "updated",
    "created",
)


@dataclass(frozen=True)
class TarRef:
    """One tar as a task sees it: where to read it and the key of its index.

    Attributes:
        url: local path or fsspec URL of the tar.
        size: its size in bytes when it was listed.
        stamp: its ETag or mtime when it was listed (``sha256:...`` when the filesystem has
            neither, computed from the bytes).
    """

    url: str
    size: int
    stamp: str

    @property
    def name(self) -> str:
        """The tar's base name, used in messages and problem lists."""
        return posixpath.basename(self.url.rstrip("/"))

    @property
    def key(self) -> str:
        """32 hex digits naming this version of the tar's index."""
        text = f"tar-index-v{INDEX_VERSION}\0{self.name}\0{self.size}\0{self.stamp}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def stamp_of(info: dict[str, Any], url: str) -> str:
    """The modification stamp of a listed file: ETag, else mtime, else a hash of its bytes.

    Hashing reads the whole tar, so it only happens on filesystems that report neither.
    """
    for field in _STAMPS:
        value = info.get(field)
        if value:
            return f"{field}:{str(value).strip(chr(34))}"
    h = hashlib.sha256()
    fs, path = fsspec.core.url_to_fs(url)
    with fs.open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def index_url(cache_dir: str, ref: TarRef) -> str:
    """The index file of ``ref`` under ``cache_dir``."""
    return f"{cache_dir.rstrip('/')}/tar-index-v{INDEX_VERSION}/{ref.key}.idx"


def summary_url(cache_dir: str, fingerprint: str) -> str:
    """The per-tar counts of one source (its tars and filters) under ``cache_dir``."""
    return f"{cache_dir.rstrip('/')}/tar-index-v{INDEX_VERSION}/sets/{fingerprint}.json"


def exists(url: str) -> bool:
    """Whether ``url`` exists (local path or fsspec URL)."""
    fs, path = fsspec.core.url_to_fs(url)
    return bool(fs.exists(path))


def publish(url: str, data: bytes) -> None:
    """Write ``data`` to ``url`` so that readers see all of it or nothing.

    Local files are written next to their target and renamed over it; an object store's put is
    atomic already. Two tasks publishing the same index write the same bytes, so either wins.
    """
    if "://" not in url or url.startswith("file://"):
        path = url.removeprefix("file://")
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    fs, path = fsspec.core.url_to_fs(url)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    fs.pipe_file(path, data)


def read_blob(url: str) -> np.ndarray:
    """The bytes of ``url`` as a read-only uint8 array: memory-mapped when local.

    Mapping lets the worker processes of one node share an index's pages, and a worker touches
    only the pages of the images it loads.

    Raises:
        SourceError: the file is missing or unreadable.
    """
    try:
        if "://" not in url or url.startswith("file://"):
            path = url.removeprefix("file://")
            if os.path.getsize(path) == 0:
                return np.zeros(0, np.uint8)
            return np.memmap(path, dtype=np.uint8, mode="r")
        fs, path = fsspec.core.url_to_fs(url)
        return np.frombuffer(fs.cat_file(path), np.uint8)
    except FileNotFoundError:
        raise SourceError(f"{url}: index file not found; check the cache dir") from None
    except OSError as exc:
        raise SourceError(f"{url}: cannot read the index ({exc}); check the cache dir") from None
