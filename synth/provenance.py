"""What a store's bytes depend on besides its manifest, and refusing to mix two of them.

A shard is a pure function of (manifest, index) only while the sources, the code that makes
triples and the packages that shape its bytes stay the same. A resumed build started after any
of them changed, or a cluster worker that runs other versions than the client, would write
shards that no uninterrupted build makes; the store would look complete and silently mix both.
So the store records all three, and the builder and every shard task compare before writing.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import socket
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from synth.errors import SynthError

PACKAGE_DIR = Path(__file__).resolve().parent

#: The parts of the package that make and write triples (files or folders under ``synth/``).
GENERATOR_MODULES = (
    "edits",
    "sources",
    "index",
    "sample.py",
    "rng.py",
    "manifest.py",
    "store.py",
    "build.py",
)

#: Distributions whose version can change a triple's bytes: numpy's ``Generator`` streams may
#: change between releases, OpenCV's filters, RLE decoding, the codecs and their framing.
BYTE_PACKAGES = (
    "numpy",
    "opencv-python-headless",
    "scikit-image",
    "pycocotools",
    "zarr",
    "numcodecs",
    "google-crc32c",
    "patchmatch-cython",
)


def code_fingerprint(root: Path = PACKAGE_DIR) -> str:
    """16 hex digits over the paths and bytes of the ``.py`` files of ``GENERATOR_MODULES``.

    Comments and docstrings count too: telling a harmless edit from a byte-changing one is not
    possible in general, and refusing a resume costs less than a silently mixed store.
    """
    h = hashlib.sha256()
    for part in GENERATOR_MODULES:
        path = root / part
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            h.update(f.relative_to(root).as_posix().encode() + b"\0")
            h.update(f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


@functools.cache
def generator() -> dict[str, Any]:
    """This process's generator: code fingerprint and byte-shaping package versions."""
    packages = {p: v for p in BYTE_PACKAGES if (v := _version(p)) is not None}
    return {"code": code_fingerprint(), "packages": packages}


def versions() -> dict[str, str]:
    """Versions recorded in a store for people: Python, synth, Dask and ``BYTE_PACKAGES``."""
    out = {"python": platform.python_version()}
    for dist in ("synth", *BYTE_PACKAGES, "dask"):
        if (v := _version(dist)) is not None:
            out[dist] = v
    return out


def generator_changes(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between two ``generator()`` records, as ``"numpy 2.1.0 -> 2.2.0"`` items."""
    out = []
    if before.get("code") != now.get("code"):
        out.append(f"synth code {before.get('code')} -> {now.get('code')}")
    old, new = before.get("packages", {}), now.get("packages", {})
    for dist in sorted(set(old) | set(new)):
        if old.get(dist) != new.get(dist):
            out.append(f"{dist} {old.get(dist, 'absent')} -> {new.get(dist, 'absent')}")
    return out


def source_changes(before: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """Sources whose fingerprint differs, as ``"source 'coco' a1b2... -> c3d4..."`` items."""
    return [
        f"source '{name}' {before.get(name, 'absent')} -> {now.get(name, 'absent')}"
        for name in sorted(set(before) | set(now))
        if before.get(name) != now.get(name)
    ]


def check_resume(
    url: str, attrs: Mapping[str, Any], fingerprints: Mapping[str, str] | None
) -> None:
    """Refuse to finish a store whose sources or generator changed since it was started.

    ``fingerprints`` are the sources' as opened now (None: not known, not compared). Stores
    written before the generator was recorded are checked on their sources only.

    Raises:
        SynthError: one line naming every change and the two ways out.
    """
    changes = []
    if fingerprints is not None:
        changes += source_changes(attrs.get("fingerprints", {}), fingerprints)
    if "generator" in attrs:
        changes += generator_changes(attrs["generator"], generator())
    if changes:
        raise SynthError(
            f"{url}: changed since this store was started ({'; '.join(changes)}), so its "
            "missing shards would not match the ones written; restore those sources and "
            "versions, or pass --overwrite to rebuild it whole"
        )


def check_worker(expected: Mapping[str, Any]) -> None:
    """Refuse to make shards in a process whose generator differs from the client's.

    Raises:
        SynthError: names this worker's host and every difference.
    """
    changes = generator_changes(expected, generator())
    if changes:
        where = f"{socket.gethostname()} (pid {os.getpid()})"
        raise SynthError(
            f"worker on {where} differs from the client that planned the build "
            f"({'; '.join(changes)}), so its shards would differ from the client's: "
            "install the same synth and packages on every worker"
        )


def check_worker_sources(expected: Mapping[str, str], now: Mapping[str, str]) -> None:
    """Refuse to make shards from sources that differ from the client's (files replaced while
    the build runs, or another view of them on this worker).

    Raises:
        SynthError: names this worker's host and every source that differs.
    """
    changes = source_changes(expected, now)
    if changes:
        where = f"{socket.gethostname()} (pid {os.getpid()})"
        raise SynthError(
            f"worker on {where} sees other sources than the client that planned the build "
            f"({'; '.join(changes)}), so its shards would differ: leave the sources unchanged "
            "while a build runs and give every worker the same files, then rerun synth build"
        )
