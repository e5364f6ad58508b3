"""COCO-scale index: build time, size on disk, mmap load, and what each worker pays in memory.

A synthetic COCO instances file with ``--annotations`` annotations (about 7 per image; 83%
single polygons, 7% multi-part polygons, 8% compressed RLE, 1% uncompressed RLE, 1% crowd
regions; no image files, which indexing never reads) is generated once, then:

- **parse**: ``json.loads`` of the file's bytes (the floor of any JSON-based index);
- **build**: ``CocoIndex.build`` (parse + validate + rasterise to RLE), each repeat in a fresh
  process, with that process's peak RSS;
- **save / load**: ``CocoIndex.save`` size against the JSON, ``CocoIndex.load`` with and
  without mmap, and ``CocoSource(..., cache_dir=...)`` opening a warm cache;
- **worker RSS**: fresh processes that import the same modules, then either (a) naive:
  ``pycocotools.coco.COCO(ann_file)`` (what every worker does without an index) or (b)
  cached: unpickle a ``CocoSource`` with ``cache_dir`` (mmap); both then count usable
  instances per image and decode 32 masks. RSS is read from ``/proc/self/status`` after the
  imports and after the work: ``anon`` is private memory, which every worker pays again;
  ``file`` is mapped index pages, which the page cache shares between workers on one node
  (the kernel maps whole read-around blocks, so a few RLE reads map megabytes of the blob).

Worker sides alternate (A B A B ...); medians and min-max over ``--repeat`` runs are reported.

    python benchmarks/coco_index.py                        # 105k annotations
    python benchmarks/coco_index.py --annotations 20000 --repeat 3 --json out.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES = ((480, 640), (427, 640), (640, 480), (375, 500), (512, 512))
N_DECODE = 32

# Imported by both worker kinds before the "before" reading, so neither side pays for them.
_WORKER_PRELUDE = """
import contextlib, gc, io, json, pickle, sys, time
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
sys.path.insert(0, {repo!r})
from synth.sources.coco import CocoIndex, CocoSource

def status():
    out = {{}}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return out

gc.collect()
before = status()
t0 = time.perf_counter()
"""

_NAIVE = """
with contextlib.redirect_stdout(io.StringIO()):
    coco = COCO({ann!r})
counts = [len(coco.getAnnIds(imgIds=i, iscrowd=False)) for i in sorted(coco.getImgIds())]
ids = sorted(coco.anns)
for k in np.linspace(0, len(ids) - 1, {n}).astype(int):
    ann = coco.anns[ids[k]]
    mask_utils.decode(coco.annToRLE(ann))
"""

_CACHED = """
with open({pkl!r}, "rb") as f:
    src = pickle.load(f)
counts = src.instance_counts()
index = src.index
for j in np.linspace(0, index.num_annotations - 1, {n}).astype(int):
    mask_utils.decode(index.rle(int(j)))
"""

_BUILD = """
index = CocoIndex.build({ann!r})
counts = index.ann_offsets
"""

_WORKER_EPILOGUE = """
seconds = time.perf_counter() - t0
gc.collect()
after = status()
print(json.dumps({"seconds": seconds, "before": before, "after": after, "n": int(len(counts))}))
"""


def _polygon(rng: np.random.Generator, h: int, w: int, max_r: float) -> list[float]:
    """A star-shaped (hence simple) polygon inside the image, coordinates to 2 decimals."""
    cx, cy = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
    r = rng.uniform(6.0, max(7.0, min(max_r, cx, cy, w - 1 - cx, h - 1 - cy)))
    k = int(rng.integers(6, 40))
    # Jittered even angles: every gap stays below pi, so each edge stays in its own wedge.
    t = (np.arange(k) + rng.uniform(0, 0.8, k)) * (2 * np.pi / k)
    rad = r * rng.uniform(0.55, 1.0, t.size)
    xy = np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], 1)
    return xy.round(2).ravel().tolist()


def _rle_pool(rng: np.random.Generator, h: int, w: int, n: int) -> tuple[list[str], list[list]]:
    """``n`` compressed and ``n // 4`` uncompressed RLEs of ellipses on an ``h`` x ``w`` image."""
    import cv2
    from pycocotools import mask as mask_utils

    compressed, raw = [], []
    for k in range(n + n // 4):
        m = np.zeros((h, w), np.uint8)
        centre = (int(rng.integers(w // 8, w - w // 8)), int(rng.integers(h // 8, h - h // 8)))
        axes = (int(rng.integers(5, w // 5)), int(rng.integers(5, h // 5)))
        cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        if k < n:
            counts = mask_utils.encode(np.asfortranarray(m))["counts"]
            compressed.append(counts.decode("ascii"))
        else:
            flat = m.ravel(order="F")
            edges = np.flatnonzero(np.diff(flat)) + 1
            bounds = np.concatenate([[0], edges, [flat.size]])
            runs = np.diff(bounds).tolist()
            raw.append(([0] if flat[0] else []) + runs)
    return compressed, raw


def generate(path: Path, n_annotations: int, seed: int = 0) -> dict[str, int]:
    """Write a COCO instances file with ``n_annotations`` annotations; returns its counts."""
    rng = np.random.default_rng(seed)
    n_images = max(1, -(-n_annotations // 7))
    images = []
    for i in range(n_images):
        h, w = SIZES[int(rng.integers(len(SIZES)))]
        images.append({"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "height": h, "width": w})
    pools = {hw: _rle_pool(rng, *hw, 48) for hw in SIZES}
    owner = np.sort(rng.integers(0, n_images, n_annotations))
    kinds = rng.choice(5, n_annotations, p=[0.83, 0.07, 0.08, 0.01, 0.01])
    annotations = []
    for a, (i, kind) in enumerate(zip(owner.tolist(), kinds.tolist(), strict=True)):
        h, w = images[i]["height"], images[i]["width"]
        compressed, raw = pools[(h, w)]
        crowd = 0
        if kind == 0:
            seg: Any = [_polygon(rng, h, w, min(h, w) / 4)]
        elif kind == 1:
            seg = [_polygon(rng, h, w, min(h, w) / 8) for _ in range(int(rng.integers(2, 4)))]
        elif kind == 2:
            seg = {"size": [h, w], "counts": compressed[int(rng.integers(len(compressed)))]}
        else:
            seg = {"size": [h, w], "counts": raw[int(rng.integers(len(raw)))]}
            crowd = int(kind == 4)
        if isinstance(seg, list):
            xs = [v for part in seg for v in part[0::2]]
            ys = [v for part in seg for v in part[1::2]]
            box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
        else:
            box = [0.0, 0.0, float(w), float(h)]
        annotations.append(
            {
                "id": a + 1,
                "image_id": i + 1,
                "category_id": int(rng.integers(1, 81)),
                "segmentation": seg,
                "area": round(0.6 * box[2] * box[3], 2),
                "bbox": [round(v, 2) for v in box],
                "iscrowd": crowd,
            }
        )
    categories = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in range(1, 81)]
    doc = {"info": {"description": "synthetic"}, "images": images}
    doc.update(annotations=annotations, categories=categories)
    path.write_text(json.dumps(doc, separators=(",", ":")))
    return {"images": n_images, "annotations": n_annotations, "crowd": int((kinds == 4).sum())}


def _worker(body: str) -> dict[str, Any]:
    """Run ``body`` in a fresh interpreter between the RSS readings; returns its report."""
    code = _WORKER_PRELUDE.format(repo=str(REPO)) + body + _WORKER_EPILOGUE
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _times(fn: Callable[[], object], repeat: int) -> list[float]:
    fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _delta(r: dict[str, Any], key: str) -> float:
    return r["after"][key] - r["before"][key]


def run(n_annotations: int, repeat: int, build_repeat: int, work: Path) -> dict[str, Any]:
    """Every measurement of the module docstring; returns plain data for the table and JSON."""
    from synth.sources.coco import CocoIndex, CocoSource

    ann = work / "instances.json"
    t0 = time.perf_counter()
    counts = generate(ann, n_annotations)
    gen_s = time.perf_counter() - t0
    json_bytes = ann.stat().st_size
    parse = _times(functools.partial(json.loads, ann.read_bytes()), repeat)

    builds = [_worker(_BUILD.format(ann=str(ann))) for _ in range(build_repeat)]

    cache = work / "cache"
    t0 = time.perf_counter()
    source = CocoSource(ann, work / "images", cache_dir=cache)
    cold_open = time.perf_counter() - t0
    (index_dir,) = {p.parent for p in cache.glob("*/meta.json")}
    index_bytes = _dir_bytes(index_dir)
    in_memory = CocoIndex.load(index_dir, mmap=False)
    save = _times(functools.partial(in_memory.save, work / "saved"), repeat)
    load_mmap = _times(lambda: CocoIndex.load(index_dir, mmap=True), max(repeat, 5))
    load_full = _times(lambda: CocoIndex.load(index_dir, mmap=False), repeat)
    warm_open = _times(lambda: CocoSource(ann, work / "images", cache_dir=cache), repeat)
    pkl = work / "source.pkl"
    pkl.write_bytes(pickle.dumps(source))

    naive, cached = [], []
    for _ in range(repeat):
        naive.append(_worker(_NAIVE.format(ann=str(ann), n=N_DECODE)))
        cached.append(_worker(_CACHED.format(pkl=str(pkl), n=N_DECODE)))

    def side(rs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "seconds": _stats([r["seconds"] for r in rs]),
            "rss_delta_mb": _stats([_delta(r, "VmRSS") for r in rs]),
            "anon_delta_mb": _stats([_delta(r, "RssAnon") for r in rs]),
            "file_delta_mb": _stats([_delta(r, "RssFile") for r in rs]),
            "peak_mb": _stats([r["after"]["VmHWM"] for r in rs]),
            "baseline_rss_mb": statistics.median(r["before"]["VmRSS"] for r in rs),
        }

    return {
        "counts": {**counts, "indexed": source.index.num_annotations},
        "problems": len(source.problems),
        "generate_s": gen_s,
        "json_mb": json_bytes / 2**20,
        "index_mb": index_bytes / 2**20,
        "pickled_source_bytes": pkl.stat().st_size,
        "parse_s": _stats(parse),
        "build_s": _stats([b["seconds"] for b in builds]),
        "build_peak_mb": _stats([b["after"]["VmHWM"] for b in builds]),
        "cold_open_s": cold_open,
        "save_s": _stats(save),
        "load_mmap_ms": _stats([t * 1e3 for t in load_mmap]),
        "load_full_ms": _stats([t * 1e3 for t in load_full]),
        "warm_open_ms": _stats([t * 1e3 for t in warm_open]),
        "naive": side(naive),
        "cached": side(cached),
    }


def _fmt(s: dict[str, float], unit: str, digits: int = 1) -> str:
    return f"{s['median']:.{digits}f} {unit} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def report(r: dict[str, Any], repeat: int, build_repeat: int) -> str:
    """The table and the one-line summary."""
    c, nv, ca = r["counts"], r["naive"], r["cached"]
    rows = [
        ("annotations (images, crowd)", f"{c['annotations']} ({c['images']}, {c['crowd']})"),
        ("indexed / problems", f"{c['indexed']} / {r['problems']}"),
        ("JSON size", f"{r['json_mb']:.1f} MB"),
        ("json.loads", _fmt(r["parse_s"], "s", 2)),
        (f"CocoIndex.build (x{build_repeat})", _fmt(r["build_s"], "s", 2)),
        ("  build peak RSS", _fmt(r["build_peak_mb"], "MB", 0)),
        ("first CocoSource(cache_dir) (build+save)", f"{r['cold_open_s']:.2f} s"),
        (
            "index on disk (save)",
            f"{r['index_mb']:.1f} MB ({r['index_mb'] / r['json_mb']:.2f}x JSON)",
        ),
        ("CocoIndex.save", _fmt(r["save_s"], "s", 3)),
        ("CocoIndex.load mmap", _fmt(r["load_mmap_ms"], "ms", 2)),
        ("CocoIndex.load in memory", _fmt(r["load_full_ms"], "ms", 1)),
        ("CocoSource(cache_dir) warm", _fmt(r["warm_open_ms"], "ms", 1)),
        ("pickled CocoSource", f"{r['pickled_source_bytes']} B"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append("")
    lines.append(
        f"{'worker (fresh process)':<24} {'time':>22} {'RSS +':>20} {'anon +':>20} "
        f"{'file +':>16} {'peak':>10}"
    )
    for name, s in (("naive COCO(json)", nv), ("cached CocoSource mmap", ca)):
        lines.append(
            f"{name:<24} {_fmt(s['seconds'], 's', 2):>22} {_fmt(s['rss_delta_mb'], 'MB', 0):>20} "
            f"{_fmt(s['anon_delta_mb'], 'MB', 0):>20} {s['file_delta_mb']['median']:>13.0f} MB "
            f"{s['peak_mb']['median']:>7.0f} MB"
        )
    lines.append(
        f"(workers: median (min-max) of {repeat}, alternating; baseline RSS after imports "
        f"{nv['baseline_rss_mb']:.0f} / {ca['baseline_rss_mb']:.0f} MB)"
    )
    ratio = r["index_mb"] / r["json_mb"]
    lines.append(
        f"coco index: {c['annotations'] / 1000:.0f}k annotations, build "
        f"{r['build_s']['median']:.1f} s, index {r['index_mb']:.0f} MB ({ratio:.2f}x JSON), "
        f"load {r['load_mmap_ms']['median']:.1f} ms mmap, worker RSS "
        f"+{ca['rss_delta_mb']['median']:.0f} MB mmap (+{ca['anon_delta_mb']['median']:.0f} MB "
        f"private) vs +{nv['rss_delta_mb']['median']:.0f} MB naive (median of {repeat})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotations", type=int, default=105_000, help="annotations to generate")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each cheap measurement")
    ap.add_argument("--build-repeat", type=int, default=3, help="full index builds (slow)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the files here")
    ap.add_argument("--json", type=Path, default=None, help="also write results here")
    args = ap.parse_args(argv)
    if args.annotations < 1 or args.repeat < 1 or args.build_repeat < 1:
        ap.error("--annotations, --repeat and --build-repeat must be >= 1")
    if not Path("/proc/self/status").is_file():
        ap.error("worker RSS is read from /proc/self/status: run on Linux")

    work = args.workdir or Path(tempfile.mkdtemp(prefix="coco-index-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = run(args.annotations, args.repeat, args.build_repeat, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(report(results, args.repeat, args.build_repeat))
    if args.json is not None:
        import pycocotools

        payload = {
            "annotations": args.annotations,
            "repeat": args.repeat,
            "build_repeat": args.build_repeat,
            "results": results,
            "versions": {
                "python": platform.python_version(),
                "numpy": np.__version__,
                "pycocotools": getattr(pycocotools, "__version__", "unknown"),
            },
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
