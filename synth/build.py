"""``synth build``: a manifest becomes a sharded Zarr v3 store through Dask shard tasks.

The plan is one task per shard: a task makes the shard's triples and writes every array's
slice of that shard whole, then its row of ``build/records``. No two tasks touch the same
object, tasks are deterministic and idempotent, so Dask re-running a task after a worker dies,
or a second ``synth build`` resuming an interrupted one, rewrites identical bytes.

Sources stored as many tars (``sa1b``) are indexed first, by one task per tar on the same
client (``synth.index.cluster``); the driver keeps per-tar counts only.
"""

from __future__ import annotations

import contextlib
import ctypes
import resource
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from synth import problems, provenance
from synth import store as zstore
from synth.cluster import ClusterRecipe, open_client, results_as_completed
from synth.errors import SourceError, SynthError
from synth.manifest import Manifest, parse_manifest

_CATALOGS: dict[str, Any] = {}
#: the source fingerprints of the catalog in ``_CATALOGS``, taken when it was opened
_OPENED: dict[str, dict[str, str]] = {}


def _catalog(manifest: Manifest) -> Any:
    """The worker's opened sources for ``manifest``, opened once per process and reused."""
    from synth.sample import Catalog

    key = manifest.fingerprint()
    if key not in _CATALOGS:
        _tune_worker_process()
        _CATALOGS.clear()
        _OPENED.clear()
        _CATALOGS[key] = Catalog.open(manifest)
    return _CATALOGS[key]


def _check_sources(manifest: Manifest, expected: Mapping[str, str]) -> None:
    """Refuse to make shards from other sources than the client's.

    A catalog kept from an earlier build whose files changed since is opened again first; only
    sources that differ once reopened (changed while this build runs, or another copy on this
    worker) are refused.
    """
    key = manifest.fingerprint()
    for _ in range(2):
        catalog = _catalog(manifest)
        now = _OPENED.setdefault(key, catalog.fingerprints(manifest))
        if now == dict(expected):
            return
        _CATALOGS.clear()
        _OPENED.clear()
    provenance.check_worker_sources(expected, now)


#: glibc's ``M_MMAP_THRESHOLD`` parameter number (``malloc.h``).
_M_MMAP_THRESHOLD = -3


def _tune_worker_process(mmap_threshold: int = 16 << 20) -> None:
    """Settings for a process that makes triples, applied wherever its worker was started.

    - One OpenCV thread: a worker process (or thread) is one core's share of the build, and
      OpenCV's own pool would oversubscribe the cores the other workers already fill.
    - Image-sized temporaries from the heap: Dask starts workers with ``MALLOC_TRIM_THRESHOLD_``
      set, which pins glibc's mmap threshold at 128 KiB, so every 192 KiB image temporary of an
      edit becomes a fresh ``mmap`` whose pages fault in on first touch. Raising the threshold
      made a Dask worker ~30% faster (``benchmarks/build.py``). Not glibc: left alone.
    """
    cv2.setNumThreads(1)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, mmap_threshold)


def kinds_of() -> list[str]:
    """Every registered edit kind in a stable order; ``meta/kind`` stores positions in it."""
    from synth.edits import EDITS

    return sorted(EDITS)


def make_shard(
    manifest: Manifest, shard: int, *, strict: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Make every triple of ``shard``: the arrays to write and the shard's record.

    An input that fails once fails for the rest of the shard without being read again
    (``Catalog.forget_failures`` starts each shard afresh); each use is still recorded.
    """
    from synth.sample import realize

    catalog = _catalog(manifest)
    catalog.forget_failures()
    layout = layout_for(manifest)
    start, stop = layout.shard_range(shard)
    n, (H, W) = stop - start, manifest.size
    kinds = kinds_of()
    arrays: dict[str, np.ndarray] = {
        "images": zstore.empty_images(n, H, W),
        "mask": np.empty((n, H, W), np.uint8),
    }
    for name, (dtype, tail, fill) in zstore.META_FIELDS.items():
        arrays[name] = np.full((n, *tail), fill, dtype=dtype)
    skipped: list[Any] = []
    retries, counts = 0, Counter()
    for j, index in enumerate(range(start, stop)):
        spec, triple, sk, rt = realize(manifest, catalog, index, strict=strict)
        skipped.extend(sk)
        retries += rt
        counts[spec.kind] += 1
        arrays["images"][j, 0] = triple.prompt
        arrays["images"][j, 1] = triple.query
        arrays["mask"][j] = triple.mask
        arrays["kind"][j] = kinds.index(spec.kind)
        arrays["seed"][j] = spec.seed
        arrays["attempt"][j] = spec.attempt
        for role in ("base", "donor", "texture"):
            ref = getattr(spec, role)
            if ref is not None:
                arrays[f"{role}_source"][j] = ref.source
                arrays[f"{role}_index"][j] = ref.index
        area = cv2.countNonZero(triple.mask)
        arrays["mask_area"][j] = area
        if area:
            x, y, w, h = cv2.boundingRect(triple.mask)
            arrays["bbox"][j] = (x, y, x + w, y + h)
    record = {
        "shard": shard,
        "start": start,
        "stop": stop,
        "kinds": dict(sorted(counts.items())),
        "skipped": zstore.group_skipped(s.to_dict() for s in skipped),
        "retries": retries,
    }
    return arrays, record


def build_shard_task(
    manifest_dict: Mapping[str, Any],
    url: str,
    shard: int,
    storage_options: Mapping[str, Any] | None = None,
    strict: bool = False,
    generator: Mapping[str, Any] | None = None,
    fingerprints: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Dask task: make and write one shard. Returns its record plus timing and peak RSS.

    ``generator`` is the client's ``provenance.generator()`` and ``fingerprints`` its sources'
    (``Catalog.fingerprints``); a worker whose code or sources differ (a tar replaced while the
    build runs) refuses before writing, since its shard would not be the client's.
    """
    t0 = time.perf_counter()
    if generator is not None:
        provenance.check_worker(generator)
    manifest = parse_manifest(manifest_dict, base_dir=None)
    if fingerprints is not None:
        _check_sources(manifest, fingerprints)
    arrays, record = make_shard(manifest, shard, strict=strict)
    zstore.write_shard(url, shard, arrays, record, storage_options=storage_options)
    return {
        **record,
        "seconds": time.perf_counter() - t0,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def layout_for(manifest: Manifest) -> zstore.Layout:
    H, W = manifest.size
    return zstore.Layout(manifest.n, H, W, manifest.shard_size, manifest.codec)


@dataclass
class BuildSummary:
    """What a build did; printed at the end (the store keeps records, never timings)."""

    url: str
    n: int
    n_shards: int
    shards_built: int
    shards_reused: int
    kinds: dict[str, int]
    records: list[dict[str, Any]]
    retries: int
    seconds: float
    peak_rss_mb: float
    store_bytes: int
    dashboard: str | None = None
    workers: int = 0
    source_problems: list[dict[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def skipped_inputs(self) -> list[tuple[str, int, str]]:
        """Unique skipped inputs with how often each was drawn and the first reason."""
        return problems.skipped_inputs(self.records)

    @property
    def skipped_uses(self) -> int:
        """Draws of an unusable input (every use counts, though it was read once per shard)."""
        return problems.skipped_uses(self.records)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "n": self.n,
            "n_shards": self.n_shards,
            "shards_built": self.shards_built,
            "shards_reused": self.shards_reused,
            "kinds": self.kinds,
            "skipped_inputs": [
                {"input": k, "count": c, "reason": r} for k, c, r in self.skipped_inputs()
            ],
            "skipped_uses": self.skipped_uses,
            "source_problems": {
                "count": len(self.source_problems),
                "by_source": problems.problem_counts(self.source_problems),
            },
            "retries": self.retries,
            "seconds": round(self.seconds, 3),
            "triples_per_s": round(self.extra.get("triples_built", 0) / max(self.seconds, 1e-9), 2),
            "peak_rss_mb_per_worker": round(self.peak_rss_mb, 1),
            "store_bytes": self.store_bytes,
            "workers": self.workers,
            **({"index": self.extra["index"]} if "index" in self.extra else {}),
        }

    def render(self) -> str:
        d = self.to_dict()
        pointer = f"synth info {self.url} --problems"
        lines = [
            f"store        {self.url}",
            f"triples      {self.n} in {self.n_shards} shards "
            f"({self.shards_built} built now, {self.shards_reused} already present)",
            "edit kinds   " + ", ".join(f"{k}={v}" for k, v in self.kinds.items()),
            f"wall time    {self.seconds:.1f} s, {d['triples_per_s']} triples/s "
            f"on {self.workers} worker(s)",
            f"peak RSS     {self.peak_rss_mb:.0f} MB per worker (max)",
            f"store size   {self.store_bytes / 1e6:.1f} MB",
            f"retries      {self.retries} (inputs that did not fit the drawn edit)",
        ]
        if "index" in self.extra:
            ix = self.extra["index"]
            lines.append(
                f"indexes      {ix['tars']} tar(s) counted on the cluster in {ix['seconds']:.1f} s "
                f"({ix['built']} read, {ix['tars'] - ix['built']} already indexed)"
            )
        lines += problems.render_skipped(self.skipped_inputs(), self.skipped_uses, pointer)
        lines += problems.render_source_problems(self.source_problems, pointer)
        return "\n".join(lines)


def prepare_store(
    manifest: Manifest,
    url: str,
    *,
    overwrite: bool,
    storage_options: Mapping[str, Any] | None = None,
    fingerprints: Mapping[str, str] | None = None,
    source_problems: Sequence[Mapping[str, str]] = (),
    indexes: Mapping[str, Any] | None = None,
) -> dict[int, dict[str, Any]]:
    """Create the store, or check it was made from this manifest and return its done shards.

    ``indexes`` (source name -> ``index_record()``) records the per-tar indexes a tar-sharded
    source was read through; stores of other sources do not get the key.
    """
    fs, root = zstore.filesystem(url, storage_options)
    exists = fs.exists(f"{root.rstrip('/')}/zarr.json")
    if exists and not overwrite:
        attrs = zstore.read_attrs(url, storage_options=storage_options)
        if attrs.get("format_version") != zstore.FORMAT_VERSION:
            raise SynthError(
                f"{url}: a format {attrs.get('format_version')} store and this synth writes "
                f"format {zstore.FORMAT_VERSION}; convert it (synth convert {url} NEW) or pass "
                "--overwrite to rebuild it"
            )
        if attrs.get("manifest_hash") != manifest.fingerprint():
            raise SynthError(
                f"{url}: holds a store built from a different manifest "
                f"({attrs.get('manifest_hash')} != {manifest.fingerprint()}); "
                "pass --overwrite to replace it or choose another output"
            )
        done = zstore.shard_records(url, storage_options=storage_options)
        if len(done) < layout_for(manifest).n_shards:  # a complete store makes nothing new
            provenance.check_resume(url, attrs, fingerprints)
        zstore.remove_partials(url, storage_options=storage_options)
        return done
    if fs.exists(root) and not exists and not overwrite and fs.ls(root):
        raise SynthError(
            f"{url}: exists and is not a synth store; pass --overwrite or pick another path"
        )
    attrs = {
        "manifest_hash": manifest.fingerprint(),
        "manifest": dict(manifest.raw) if manifest.raw is not None else manifest.to_dict(),
        "config": manifest.to_dict(),
        "kinds": kinds_of(),
        "versions": provenance.versions(),
        "generator": provenance.generator(),
        "fingerprints": dict(fingerprints or {}),
        "source_problems": {
            "count": len(source_problems),
            "by_source": problems.problem_counts(source_problems),
        },
        "swap_valid": True,
    }
    if indexes:
        attrs["indexes"] = dict(indexes)
    zstore.create_store(
        url,
        layout_for(manifest),
        attrs,
        source_problems=source_problems,
        storage_options=storage_options,
    )
    return {}


def check_source_problems(found: Sequence[Mapping[str, str]], strict: bool) -> None:
    """With ``strict``, refuse sources that rejected anything while indexing.

    Raises:
        SourceError: one line with the count and the first problem.
    """
    if strict and found:
        first = found[0]
        raise SourceError(
            f"{len(found)} source item(s) rejected while indexing, first "
            f"{first['source']}: {first['where']}: {first['reason']}; fix them, or build "
            "without --strict to skip them (each is then listed in the store)"
        )


def build(
    manifest: Manifest,
    url: str,
    *,
    workers: int = 2,
    threads_per_worker: int = 1,
    scheduler: str | None = None,
    overwrite: bool = False,
    strict: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    memory_limit: str | None = "auto",
    security: Any = None,
    progress: bool = True,
    shards: Sequence[int] | None = None,
    echo: Any = None,
    recipe: ClusterRecipe | None = None,
) -> BuildSummary:
    """Build (or resume) the store at ``url`` from ``manifest``.

    Args:
        workers, threads_per_worker, scheduler, memory_limit, security: a local cluster or an
            existing scheduler; ignored when ``recipe`` is given.
        recipe: where the shard tasks run (``synth.cluster``); wins over the arguments above.
        shards: build only these shards (for tests and manual repair); default all missing.
        echo: a callable for status lines (default: print to stderr).
    """
    from tqdm.auto import tqdm

    from synth.index.cluster import plan_indexes, run_indexes
    from synth.sample import Catalog

    say = echo or (lambda m: print(m, file=sys.stderr))
    t0 = time.perf_counter()
    recipe = recipe or ClusterRecipe.from_build_args(
        workers=workers,
        threads_per_worker=threads_per_worker,
        scheduler=scheduler,
        memory_limit=memory_limit,
        security=security,
    )
    peak, dashboard, n_workers = 0.0, None, recipe.workers
    index_stats: dict[str, Any] | None = None
    with contextlib.ExitStack() as stack:
        client = None

        def connect() -> Any:
            nonlocal dashboard, n_workers
            c = stack.enter_context(open_client(recipe))
            dashboard = _dashboard(c)
            if dashboard:
                say(f"dask dashboard: {dashboard}")
            n_workers = len(c.scheduler_info().get("workers", {})) or recipe.workers
            return c

        plans = plan_indexes(manifest)  # tar-sharded sources: the tars not yet counted
        if plans:
            client = connect()
            index_stats = run_indexes(client, plans, progress=progress, say=say)
        catalog = Catalog.open(manifest)  # validates sources, builds/caches indices once
        found = catalog.source_problems(manifest)
        check_source_problems(found, strict)
        fingerprints = catalog.fingerprints(manifest)
        done = prepare_store(
            manifest,
            url,
            overwrite=overwrite,
            storage_options=storage_options,
            fingerprints=fingerprints,
            source_problems=found,
            indexes=_index_records(manifest, catalog),
        )
        layout = layout_for(manifest)
        todo = [
            s for s in (shards if shards is not None else range(layout.n_shards)) if s not in done
        ]
        if done:
            say(f"resuming: {len(done)} of {layout.n_shards} shards already complete")
        records = dict(done)
        if todo:
            client = client or connect()
            payload = manifest.to_dict()
            bar = tqdm(
                total=_n_triples(layout, todo),
                unit="triple",
                desc="build",
                disable=not progress,
                dynamic_ncols=True,
            )
            # no reference to the futures here: each is dropped as its record arrives, so a
            # lost worker costs only the shards it was making (``results_as_completed``)
            results = results_as_completed(
                client,
                client.map(
                    build_shard_task,
                    [payload] * len(todo),
                    [url] * len(todo),
                    todo,
                    [dict(storage_options or {})] * len(todo),
                    [strict] * len(todo),
                    [provenance.generator()] * len(todo),
                    [fingerprints] * len(todo),
                    key=[f"synth-shard-{manifest.fingerprint()}-{s}" for s in todo],
                    pure=False,
                    retries=0,
                ),
            )
            with bar, contextlib.closing(results):
                for _, rec in results:
                    peak = max(peak, rec.pop("peak_rss_mb"))
                    rec.pop("seconds")
                    records[rec["shard"]] = rec
                    bar.update(rec["stop"] - rec["start"])
            # a worker killed while writing left its temporary file; every task is over now
            zstore.remove_partials(url, storage_options=storage_options)
    seconds = time.perf_counter() - t0
    summary = _summarise(manifest, url, records, todo, seconds, peak)
    summary.dashboard, summary.workers = dashboard, n_workers
    summary.source_problems = found
    if index_stats is not None:
        summary.extra["index"] = index_stats
    if len(records) == layout.n_shards:
        zstore.update_attrs(
            url,
            {
                "complete": True,
                "counts": summary.kinds,
                "skipped_inputs": summary.to_dict()["skipped_inputs"],
            },
            storage_options=storage_options,
        )
    summary.store_bytes = zstore.store_bytes(url, storage_options=storage_options)
    return summary


def _index_records(manifest: Manifest, catalog: Any) -> dict[str, Any]:
    """Source name -> the per-tar indexes it reads (``Sa1bSource.index_record``), if any."""
    return {
        spec.name: src.index_record()
        for spec, src in zip(manifest.images, catalog.images, strict=True)
        if hasattr(src, "index_record")
    }


def _n_triples(layout: zstore.Layout, shards: Sequence[int]) -> int:
    return sum(layout.shard_range(s)[1] - layout.shard_range(s)[0] for s in shards)


def _dashboard(client: Any) -> str | None:
    try:
        link = client.dashboard_link
    except Exception:
        return None
    return link if link and "None" not in link else None


def _summarise(
    manifest: Manifest,
    url: str,
    records: Mapping[int, Mapping[str, Any]],
    built: Sequence[int],
    seconds: float,
    peak: float,
) -> BuildSummary:
    kinds: Counter[str] = Counter()
    for r in records.values():
        kinds.update(r["kinds"])
    layout = layout_for(manifest)
    return BuildSummary(
        url=url,
        n=manifest.n,
        n_shards=layout.n_shards,
        shards_built=len(built),
        shards_reused=len(records) - len(built),
        kinds=dict(sorted(kinds.items())),
        records=[dict(records[s]) for s in sorted(records)],
        retries=sum(r["retries"] for r in records.values()),
        seconds=seconds,
        peak_rss_mb=peak,
        store_bytes=0,
        extra={"triples_built": _n_triples(layout, built)},
    )
