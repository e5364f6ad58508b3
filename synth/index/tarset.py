"""A tar-sharded source's tars, their per-tar counts, and the task that indexes one tar.

``TarSet.resolve`` lists the tars (paths, URLs or globs; one listing per folder, not one request
per tar) and stamps each with its size and ETag or mtime. ``index_tar`` is the cluster task:
it makes sure the tar's index is in the cache (building it when missing) and returns the
tar's counts under the source's filters. The driver keeps only those counts, one row per tar,
and writes them to a *summary* named by the source's fingerprint, so that workers, previews and
later builds open the source with one small read instead of one per tar.
"""

from __future__ import annotations

import glob as globlib
import json
import posixpath
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np

from synth.errors import ConfigError, SourceError
from synth.index.cache import (
    INDEX_VERSION,
    TarRef,
    exists,
    index_url,
    publish,
    read_blob,
    stamp_of,
    summary_url,
)
from synth.index.select import MaskFilter
from synth.index.tar_index import TarIndex, build_index
from synth.sources._io import absolute, fingerprint_of


@dataclass(frozen=True)
class TarCounts:
    """What the driver keeps of one tar.

    Attributes:
        images: indexed images (pairs with a usable JSON).
        eligible: images with at least one usable mask under the source's filters.
        masks: usable masks under the filters and the per-image cap.
        problems: (where, reason) for everything the index left out.
    """

    images: int
    eligible: int
    masks: int
    problems: tuple[tuple[str, str], ...] = ()


def load_index(cache_dir: str, ref: TarRef) -> TarIndex:
    """The cached index of ``ref`` (memory-mapped when the cache is local).

    Raises:
        SourceError: it is missing or damaged.
    """
    url = index_url(cache_dir, ref)
    return TarIndex.from_bytes(read_blob(url), url)


def index_tar(ref: TarRef, cache_dir: str, filters: MaskFilter) -> dict[str, Any]:
    """Dask task: the index of ``ref`` in the cache (built when missing), reduced to counts.

    Idempotent: a task re-run after its worker died publishes the same bytes again.

    Returns:
        ``TarCounts`` fields plus ``built`` (whether the tar was read), ``seconds`` and the
        process's ``peak_rss_mb``.
    """
    t0 = time.perf_counter()
    url = index_url(cache_dir, ref)
    built = not exists(url)
    if built:
        idx = build_index(ref)
        publish(url, idx.to_bytes())
    else:
        idx = load_index(cache_dir, ref)
    counts = filters.counts(idx)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "images": len(idx),
        "eligible": int(np.count_nonzero(counts)),
        "masks": int(counts.sum()),
        "problems": [list(p) for p in idx.problems],
        "built": built,
        "seconds": time.perf_counter() - t0,
        "peak_rss_mb": rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024,
    }


@dataclass(frozen=True)
class TarSet:
    """The tars of one source, stamped, with the cache and filters their counts depend on."""

    refs: tuple[TarRef, ...]
    cache_dir: str
    filters: MaskFilter

    @classmethod
    def resolve(cls, tars: str | Sequence[str], cache_dir: str, filters: MaskFilter) -> TarSet:
        """List ``tars`` (paths, fsspec URLs or globs), sorted by URL and de-duplicated.

        Raises:
            ConfigError: ``tars`` is not a string or a list of strings.
            SourceError: a named tar is missing or a glob matches nothing.
        """
        entries = [tars] if isinstance(tars, str) else tars
        if (
            not isinstance(entries, (list, tuple))
            or not entries
            or not all(isinstance(e, str) and e for e in entries)
        ):
            raise ConfigError(f"tars: {tars!r}; give a path, URL or glob, or a list of them")
        found: dict[str, dict[str, Any]] = {}
        plain: dict[str, list[str]] = defaultdict(list)
        for entry in entries:
            url = absolute(entry)
            if globlib.has_magic(url.split("://", 1)[-1]):
                found.update(_glob(url, entry))
            else:
                plain[posixpath.dirname(url.rstrip("/"))].append(url)
        for folder, urls in plain.items():
            found.update(_stat(folder, urls))
        refs = tuple(
            TarRef(url, int(info.get("size") or 0), stamp_of(info, url))
            for url, info in sorted(found.items())
        )
        return cls(refs, absolute(cache_dir), filters)

    @property
    def fingerprint(self) -> str:
        """Changes with any tar's name, size or stamp, their order, or the filters."""
        return fingerprint_of(
            "tar-set",
            INDEX_VERSION,
            [(r.name, r.size, r.stamp) for r in self.refs],
            sorted(self.filters.to_dict().items()),
        )

    @property
    def summary_url(self) -> str:
        return summary_url(self.cache_dir, self.fingerprint)

    def has_summary(self) -> bool:
        return exists(self.summary_url)

    def read_summary(self) -> list[TarCounts] | None:
        """The per-tar counts written by ``write_summary``, or None when there are none yet."""
        url = self.summary_url
        try:
            with fsspec.open(url, "rb") as f:
                doc = json.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            raise SourceError(f"{url}: unreadable tar summary ({exc}); delete it") from None
        rows = doc.get("tars", [])
        if doc.get("fingerprint") != self.fingerprint or len(rows) != len(self.refs):
            raise SourceError(f"{url}: tar summary of another tar set; delete it")
        return [
            TarCounts(
                images=int(r["images"]),
                eligible=int(r["eligible"]),
                masks=int(r["masks"]),
                problems=tuple((str(w), str(why)) for w, why in r["problems"]),
            )
            for r in rows
        ]

    def write_summary(self, results: Sequence[dict[str, Any]]) -> list[TarCounts]:
        """Keep the counts of ``index_tar`` results (one per tar, in order) as the summary."""
        rows = [
            {
                "name": ref.name,
                "key": ref.key,
                "images": r["images"],
                "eligible": r["eligible"],
                "masks": r["masks"],
                "problems": r["problems"],
            }
            for ref, r in zip(self.refs, results, strict=True)
        ]
        doc = {
            "version": INDEX_VERSION,
            "fingerprint": self.fingerprint,
            "filters": self.filters.to_dict(),
            "tars": rows,
        }
        publish(self.summary_url, json.dumps(doc).encode())
        return [
            TarCounts(
                r["images"], r["eligible"], r["masks"], tuple((w, why) for w, why in r["problems"])
            )
            for r in rows
        ]

    def counts(self) -> list[TarCounts]:
        """The per-tar counts: from the summary, else by indexing every tar in this process.

        ``synth build`` runs the index tasks on its cluster first, so this process only reads
        the summary; a preview of a source never built indexes here, one tar after another.
        """
        found = self.read_summary()
        if found is not None:
            return found
        return self.write_summary([index_tar(r, self.cache_dir, self.filters) for r in self.refs])


def _glob(url: str, entry: str) -> dict[str, dict[str, Any]]:
    fs, path = fsspec.core.url_to_fs(url)
    matches = fs.glob(path, detail=True)
    files = {p: i for p, i in matches.items() if i.get("type", "file") == "file"}
    if not files:
        raise SourceError(f"{entry}: no tar matches this pattern; check it")
    return {_full(fs, url, p): i for p, i in files.items()}


def _stat(folder: str, urls: list[str]) -> dict[str, dict[str, Any]]:
    """Size and stamp of ``urls`` (all in ``folder``) from one listing of the folder."""
    fs, base = fsspec.core.url_to_fs(folder)
    try:
        listed = {e["name"].rstrip("/"): e for e in fs.ls(base, detail=True)}
    except OSError:  # not listable (e.g. plain HTTP): ask for each tar instead
        listed = {}
    out = {}
    for url in urls:
        path = fsspec.core.url_to_fs(url)[1].rstrip("/")
        info = listed.get(path)
        if info is None:
            try:
                info = fs.info(path)
            except FileNotFoundError:
                raise SourceError(f"{url}: tar not found; check the path") from None
            except OSError as exc:
                raise SourceError(
                    f"{url}: cannot read ({exc}); check the path and access"
                ) from None
        if info.get("type", "file") != "file":
            raise SourceError(f"{url}: is a folder, not a tar; use a glob such as {url}/*.tar")
        out[url] = info
    return out


def _full(fs: Any, like: str, path: str) -> str:
    """``path`` from a listing of ``fs`` as a URL of the same form as ``like``."""
    if "://" not in like:
        return path
    return fs.unstrip_protocol(path)
