"""Per-tar index tasks on the build's Dask client, before any shard task.

``plan_indexes`` asks every image source of a manifest which tars it still needs counted (only
sources stored as tars have any; a source whose summary exists needs none, so a rebuild starts no
index task). ``run_indexes`` submits one task per tar to the same client the shard tasks use,
with the shard tasks' policy: a task whose worker dies is rerun by the scheduler, a task that
raises (a tar that cannot be read at all) stops the build with its one-line error, and a
rerun of ``synth build`` finds the indexes already written. Damage inside a tar is not an
error: it comes back as the tar's problems. The driver gathers counts only (a few numbers and
the problem list per tar) and writes each source's summary.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from synth.cluster import results_as_completed
from synth.errors import SourceError
from synth.index.tarset import TarSet, index_tar
from synth.manifest import Manifest
from synth.sources import index_plan


@dataclass(frozen=True)
class IndexPlan:
    """The tars of one manifest source that have no summary yet."""

    source: str
    tar_set: TarSet


def plan_indexes(manifest: Manifest) -> list[IndexPlan]:
    """The index work of ``manifest``'s image sources, found by listing their tars only.

    Raises:
        SourceError: a source's tars cannot be listed, naming the manifest entry.
    """
    plans = []
    for spec in manifest.images:
        try:
            tar_set = index_plan(spec.kind, name=spec.name, **dict(spec.options))
        except SourceError as e:
            raise SourceError(f"sources.images {spec.name!r}: {e}") from e
        if tar_set is not None:
            plans.append(IndexPlan(spec.name, tar_set))
    return plans


def run_indexes(
    client: Any,
    plans: list[IndexPlan],
    *,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Index every tar of ``plans`` on ``client``, one task per tar, and write the summaries.

    Returns:
        ``tars``, ``built`` (tars read, the rest were cached), ``seconds`` (wall),
        ``task_seconds`` (summed over tasks) and ``peak_rss_mb`` (largest worker).

    Raises:
        SourceError: a tar could not be read (from its task).
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    total = sum(len(p.tar_set.refs) for p in plans)
    say(f"indexing {total} tar(s) of {', '.join(p.source for p in plans)} on the cluster")
    owner = {_task_key(p, k): (p, k) for p in plans for k in range(len(p.tar_set.refs))}
    results: dict[str, list[Any]] = {p.source: [None] * len(p.tar_set.refs) for p in plans}
    bar = tqdm(total=total, unit="tar", desc="index", disable=not progress, dynamic_ncols=True)
    # no reference to the futures here: each is dropped as its counts arrive, so a lost worker
    # costs only the tars it was reading (``results_as_completed``)
    counts = results_as_completed(client, _submit(client, plans))
    with bar, contextlib.closing(counts):
        for key, result in counts:
            p, k = owner[key]
            results[p.source][k] = result
            bar.update(1)
    for p in plans:
        p.tar_set.write_summary(results[p.source])
    done = [r for rs in results.values() for r in rs]
    return {
        "tars": total,
        "built": sum(r["built"] for r in done),
        "seconds": time.perf_counter() - t0,
        "task_seconds": sum(r["seconds"] for r in done),
        "peak_rss_mb": max((r["peak_rss_mb"] for r in done), default=0.0),
    }


def _task_key(plan: IndexPlan, k: int) -> str:
    """The index task of tar ``k`` of ``plan``: the same key on a rerun of the same tars."""
    return f"synth-index-{plan.tar_set.fingerprint}-{k}"


def _submit(client: Any, plans: list[IndexPlan]) -> list[Any]:
    """One index task per tar of ``plans``; the caller hands the futures on and keeps none."""
    futures = []
    for p in plans:
        ts = p.tar_set
        futures += client.map(
            index_tar,
            list(ts.refs),
            [ts.cache_dir] * len(ts.refs),
            [ts.filters] * len(ts.refs),
            key=[_task_key(p, k) for k in range(len(ts.refs))],
            pure=False,
            retries=0,
        )
    return futures
