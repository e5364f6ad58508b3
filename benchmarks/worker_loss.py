"""A lost worker: do the other workers stall, what does the build pay, are the bytes the same?

``synth build`` on a local cluster of ``--workers`` worker processes (with nannies, as
``synth build --workers N`` starts them), alternating per repeat:

- **clean**: uninterrupted;
- **kills**: one worker process SIGKILLed every ``--every`` seconds, ``--kills`` times,
  round-robin; its nanny starts a new one. A kill waits until every worker has made a shard,
  so each kill has warm survivors.

A scheduler plugin stamps each shard's first completion with the worker that made it; a shard
made again (its result was lost with a worker) counts as ``redone``, not as progress. Per kill:

- **stall**: the longest gap between consecutive new shards of a surviving worker, from its
  last shard before the kill up to the next kill (30 s at most); a worker that never stopped
  shows about one shard's time (the clean median gap, printed below the table);
- **progress**: the same over all workers together (what the progress bar shows);
- the kill's timeline: worker removed by the scheduler, new worker registered, its first shard.

Then the wall time with kills against the clean build's, and whether each killed build wrote
the clean build's bytes (a mismatch names the files).

    python benchmarks/worker_loss.py                                 # embedded samples
    python benchmarks/worker_loss.py --n 4096 --every 5 --kills 2 --repeat 2 --json out.json
    python benchmarks/worker_loss.py --manifest my.yaml --n 20000    # any manifest
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
# the kills are meant: the workers' and the scheduler's tracebacks would bury the table
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distributed.diagnostics.plugin import SchedulerPlugin  # noqa: E402

from tests.conftest import store_digest  # noqa: E402

SHARD_KEY = "synth-shard-"


class Recorder(SchedulerPlugin):
    """Scheduler plugin: shard completions per worker, and workers leaving and joining."""

    name = "worker-loss-recorder"

    def __init__(self) -> None:
        self.done: list[tuple[float, str, str]] = []  # (monotonic time, worker, key), first time
        self.redone: list[tuple[float, str, str]] = []  # a shard made again: lost, recomputed
        self.events: list[tuple[float, str, str]] = []  # (monotonic time, what, worker)
        self._seen: set[str] = set()

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "memory" and str(key).startswith(SHARD_KEY) and kwargs.get("worker"):
            stamp = (time.monotonic(), kwargs["worker"], str(key))
            (self.redone if stamp[2] in self._seen else self.done).append(stamp)
            self._seen.add(stamp[2])

    def add_worker(self, scheduler: Any, worker: str) -> None:
        self.events.append((time.monotonic(), "joined", worker))

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        self.events.append((time.monotonic(), "removed", worker))


def _scheduler(before: set[int], stop: threading.Event) -> Any:
    """The in-process scheduler the build's local cluster starts (not one seen before)."""
    from distributed.scheduler import Scheduler

    while not stop.is_set():
        for s in list(Scheduler._instances):
            if id(s) not in before and s.status.name == "running":
                return s
        time.sleep(0.01)
    return None


def _attach(recorder: Recorder, before: set[int], stop: threading.Event) -> Any:
    s = _scheduler(before, stop)
    if s is not None:
        s.loop.add_callback(s.add_plugin, recorder)
    return s


def run_build(manifest: Any, url: str, workers: int, every: float, kills: int) -> dict[str, Any]:
    """One build; with ``kills`` > 0, SIGKILL a worker process every ``every`` seconds.

    A kill waits until every worker has made a shard, so each kill has warm survivors to
    measure (a worker restarted by its nanny first imports and opens the sources).
    """
    from distributed.scheduler import Scheduler

    from synth.build import build

    rec, stop = Recorder(), threading.Event()
    before = {id(s) for s in Scheduler._instances}
    killed: list[tuple[float, str, int]] = []

    def watch() -> None:
        s = _attach(rec, before, stop)
        if s is None:
            return
        while not rec.done and not stop.wait(0.05):  # the first shard: the build is running
            pass
        t_next = time.monotonic() + every
        while len(killed) < kills and not stop.wait(0.05):
            current = sorted(dict(s.workers).values(), key=lambda ws: str(ws.name))
            made = {w for _, w, _ in rec.done + rec.redone}
            if time.monotonic() < t_next or len(current) < workers:
                continue
            if any(ws.address not in made for ws in current):  # a new worker still warming up
                continue
            victim = current[len(killed) % workers]
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim.pid, signal.SIGKILL)
                killed.append((time.monotonic(), victim.address, victim.pid))
            t_next = time.monotonic() + every

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    t0 = time.monotonic()
    try:
        build(manifest, url, workers=workers, progress=False, echo=lambda m: None)
    finally:
        t1 = time.monotonic()
        stop.set()
        th.join()
    return {
        "t0": t0,
        "t1": t1,
        "done": list(rec.done),
        "redone": list(rec.redone),
        "events": list(rec.events),
        "killed": killed,
    }


def gaps(done: list[tuple[float, str, str]]) -> dict[str, list[tuple[float, float]]]:
    """Per worker address: consecutive completion pairs (previous, next)."""
    by: dict[str, list[float]] = {}
    for t, w, _ in sorted(done):
        by.setdefault(w, []).append(t)
    return {w: list(zip(ts, ts[1:], strict=False)) for w, ts in by.items()}


#: a kill's window: gaps that start later than this after it are another kill's, or noise
WINDOW_S = 30.0


def stalls(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Per kill: the surviving workers' longest gap between new shards, and the timeline.

    A survivor is a worker other than the victim that made a shard (new or again) before the
    kill and was still there at the window's end; its gap runs from that shard. ``progress``
    is the same gap over all workers together (what the progress bar shows); a shard made
    again after its result was lost is no progress, and is counted in ``redone``. Without a
    new shard in the window, a gap runs to
    the window's end (a lower bound).
    """
    out = []
    kills = run["killed"]
    last = max(t for t, _, _ in run["done"])  # the cluster's close removes every worker
    for i, (tk, victim, _) in enumerate(kills):
        end = min(kills[i + 1][0] if i + 1 < len(kills) else last, tk + WINDOW_S)
        gone = {w for t, e, w in run["events"] if e == "removed" and t < end}
        made = run["done"] + run["redone"]
        survivors = {
            w: _gap(
                [t for t, ww, _ in run["done"] if ww == w],
                tk,
                end,
                since=max(t for t, ww, _ in made if ww == w and t <= tk),
            )
            for w in {w for t, w, _ in made if t <= tk} - gone - {victim}
        }
        joined = next((w for t, e, w in sorted(run["events"]) if e == "joined" and t >= tk), None)
        out.append(
            {
                "kill_at": round(tk - run["t0"], 2),
                "stall": max(survivors.values(), default=float("nan")),
                "progress": _gap(
                    [t for t, _, _ in run["done"]],
                    tk,
                    end,
                    since=max(t for t, _, _ in run["done"] if t <= tk),
                ),
                "per_survivor": {w: round(v, 2) for w, v in survivors.items()},
                "redone": sum(1 for t, _, _ in run["redone"] if tk <= t < end),
                "removed_after": _first(run["events"], tk, "removed", victim),
                "joined_after": _first(run["events"], tk, "joined"),
                "new_worker_first_shard_after": _first(
                    [(t, "made", w) for t, w, _ in run["done"] + run["redone"]], tk, "made", joined
                ),
            }
        )
    return out


def _gap(times: list[float], t_kill: float, end: float, since: float) -> float:
    """The longest gap between consecutive new shards ``times``, from ``since`` to ``end``."""
    marks = [since] + sorted(t for t in times if t_kill < t <= end)
    if marks[-1] <= t_kill:
        marks.append(end)
    return max(b - a for a, b in zip(marks, marks[1:], strict=False))


def _first(
    stamps: list[tuple[float, str, str]], t_kill: float, what: str, worker: str | None = None
) -> float | None:
    """Seconds from ``t_kill`` to the first ``what`` stamp after it (of ``worker``, if given)."""
    t = next(
        (
            t
            for t, e, w in sorted(stamps)
            if t >= t_kill and e == what and (worker is None or w == worker)
        ),
        None,
    )
    return None if t is None else round(t - t_kill, 2)


def _timeline(run: dict[str, Any]) -> list[tuple[float, str, str]]:
    """Every stamp of a killed build, in seconds from its start: (t, what, worker or shard)."""
    stamps = [(t, "shard", f"{w} {k.rsplit('-', 1)[1]}") for t, w, k in run["done"]]
    stamps += [(t, "again", f"{w} {k.rsplit('-', 1)[1]}") for t, w, k in run["redone"]]
    stamps += [(t, e, w) for t, e, w in run["events"]]
    stamps += [(t, "KILL", w) for t, w, _ in run["killed"]]
    return [(round(t - run["t0"], 3), e, w) for t, e, w in sorted(stamps)]


def _manifest(args: argparse.Namespace) -> Any:
    from synth.manifest import load_manifest, parse_manifest

    if args.manifest:
        m = load_manifest(args.manifest)
        return m.with_overrides(n=args.n) if args.n else m
    return parse_manifest(
        {
            "version": 1,
            "name": "worker-loss",
            "seed": 0,
            "n": args.n or 8192,
            "size": [args.size, args.size],
            "shard_size": args.shard,
            "sources": {
                "images": [{"name": "samples", "kind": "samples"}],
                "textures": [{"name": "tex", "kind": "samples"}],
            },
        },
        base_dir=None,
    )


def _med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})" if xs else "-"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--n", type=int, default=None, help="triples (default 8192, or the manifest's)")
    p.add_argument("--shard", type=int, default=16, help="shard size of the default manifest")
    p.add_argument("--size", type=int, default=128, help="side of the default manifest")
    p.add_argument("--manifest", default=None, help="build this manifest instead")
    p.add_argument("--every", type=float, default=6.0, help="seconds between kills")
    p.add_argument("--kills", type=int, default=3, help="kills per build")
    p.add_argument("--repeat", type=int, default=5, help="clean/kills pairs, alternating")
    p.add_argument("--json", default=None, help="write the figures and timelines here")
    args = p.parse_args(argv)
    manifest = _manifest(args)
    clean_s, killed_s, per_kill, clean_gaps, identical = [], [], [], [], []
    timelines: list[list[tuple[float, str, str]]] = []
    with tempfile.TemporaryDirectory(prefix="synth-worker-loss-") as tmp:
        ref: dict[str, str] | None = None
        for r in range(args.repeat):
            url = f"{tmp}/clean-{r}.zarr"
            clean = run_build(manifest, url, args.workers, args.every, 0)
            clean_s.append(clean["t1"] - clean["t0"])
            clean_gaps += [b - a for pairs in gaps(clean["done"]).values() for a, b in pairs]
            digest = store_digest(url)
            ref = ref or digest
            identical.append(digest == ref)
            url = f"{tmp}/killed-{r}.zarr"
            killed = run_build(manifest, url, args.workers, args.every, args.kills)
            killed_s.append(killed["t1"] - killed["t0"])
            per_kill += stalls(killed)
            timelines.append(_timeline(killed))
            digest = store_digest(url)
            identical.append(digest == ref)
            if digest != ref:
                differ = sorted(
                    k for k in digest.keys() | ref.keys() if digest.get(k) != ref.get(k)
                )
                print(f"repeat {r}: {len(differ)} file(s) differ: {differ[:5]}", file=sys.stderr)
            print(
                f"repeat {r}: clean {clean_s[-1]:.1f} s, {len(killed['killed'])} kill(s) "
                f"{killed_s[-1]:.1f} s",
                file=sys.stderr,
            )
    shard_s = statistics.median(clean_gaps) if clean_gaps else float("nan")
    print(
        f"{'kill at':>7} {'stall':>6} {'progress':>8} {'redone':>6} {'removed':>7} "
        f"{'joined':>6} {'new 1st':>7}   (s; redone: shards made again)"
    )
    for k in per_kill:
        print(
            f"{k['kill_at']:>7.1f} {k['stall']:>6.2f} {k['progress']:>8.2f} {k['redone']:>6} "
            f"{k['removed_after']!s:>7} {k['joined_after']!s:>6} "
            f"{k['new_worker_first_shard_after']!s:>7}"
        )
    stall = [k["stall"] for k in per_kill if k["stall"] == k["stall"]]
    progress = [k["progress"] for k in per_kill]
    n_kills = len(per_kill)
    cost = (sum(killed_s) - sum(clean_s)) / max(n_kills, 1)
    result = {
        "workers": args.workers,
        "n": manifest.n,
        "shard_size": manifest.shard_size,
        "every_s": args.every,
        "clean_s": clean_s,
        "killed_s": killed_s,
        "seconds_per_kill": cost,
        "shard_gap_clean_median_s": shard_s,
        "kills": per_kill,
        "identical": all(identical),
        "timelines": timelines,
    }
    print(
        f"clean build {_med(clean_s)} s, with {n_kills / max(len(killed_s), 1):.0f} kill(s) "
        f"{_med(killed_s)} s: {cost:.1f} s per kill; clean gap between shards {shard_s:.2f} s"
    )
    print(
        f"worker loss: survivors stall {_med(stall)} s per kill, progress stalls "
        f"{_med(progress)} s (median of {n_kills} kills), "
        f"{'same bytes' if all(identical) else 'BYTES DIFFER'}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
