"""Time every registered edit kind on the same prepared inputs.

Usage: ``python benchmarks/edits.py [--size 256] [--repeat 7] [--json PATH]``

The inputs are skimage photos (astronaut base with three hand-made instances and a crowd
region, coffee donor with two instances, brick texture) resized to ``size`` x ``size``. Each
kind is warmed up once, then run ``repeat`` times with seeds 0..repeat-1 (the same seeds for
every kind); skipped samples are timed too, since the builder pays for them. OpenCV and BLAS
run single-threaded so that the numbers are per core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

# Per-core figures: BLAS (the Poisson blend's matrix products) single-threaded, like OpenCV below.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from skimage import data  # noqa: E402

from synth.edits import EDITS, EditInputs, list_edits, make_params  # noqa: E402
from synth.errors import SkipSample  # noqa: E402
from synth.sources.base import Instance, SourceImage  # noqa: E402


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def _ellipse(size: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    axes = (round(rx * size), round(ry * size))
    cv2.ellipse(m, (round(cx * size), round(cy * size)), axes, 0, 0, 360, 1, -1)
    return m.astype(bool)


def _box(size: int, y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[round(y0 * size) : round(y1 * size), round(x0 * size) : round(x1 * size)] = True
    return m


def _horse(size: int, y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    by0, bx0, by1, bx1 = (round(v * size) for v in (y0, x0, y1, x1))
    sil = cv2.resize((~data.horse()).astype(np.float32), (bx1 - bx0, by1 - by0)) > 0.5
    m = np.zeros((size, size), bool)
    m[by0:by1, bx0:bx1] = sil
    return m


def prepare_inputs(size: int) -> EditInputs:
    """The fixed benchmark inputs at ``size`` x ``size``."""
    base = SourceImage(
        key="samples:astronaut",
        image=_resize(data.astronaut(), size),
        instances=(
            Instance(_ellipse(size, 0.3, 0.3, 0.15, 0.12), category=1, ann_id=1),
            Instance(_box(size, 0.6, 0.1, 0.85, 0.35), category=2, ann_id=2),
            Instance(_horse(size, 0.55, 0.55, 0.8, 0.8), category=3, ann_id=3),
        ),
        ignore=_box(size, 0.0, 0.75, 0.25, 1.0),
    )
    donor = SourceImage(
        key="samples:coffee",
        image=_resize(data.coffee(), size),
        instances=(
            Instance(_ellipse(size, 0.45, 0.5, 0.2, 0.18), category=4, ann_id=4),
            Instance(_horse(size, 0.1, 0.05, 0.4, 0.4), category=3, ann_id=5),
        ),
    )
    return EditInputs(base=base, donor=donor, texture=_resize(data.brick(), size))


def time_kind(name: str, inputs: EditInputs, repeat: int) -> dict[str, float | int]:
    """Warm up once, then time ``repeat`` runs of edit ``name`` (seeds 0..repeat-1)."""
    fn, params = EDITS[name].fn, make_params(name)

    def once(seed: int) -> bool:
        try:
            fn(inputs, np.random.default_rng(seed), params)
        except SkipSample:
            return False
        return True

    once(0)
    times, skips = [], 0
    for seed in range(repeat):
        t0 = time.perf_counter()
        skips += not once(seed)
        times.append((time.perf_counter() - t0) * 1e3)
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "skips": skips,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="output side length (px)")
    ap.add_argument("--repeat", type=int, default=7, help="timed runs per kind (>= 1)")
    ap.add_argument("--json", type=Path, default=None, help="also write results here")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")

    cv2.setNumThreads(1)  # per-core figures: the builder runs one single-threaded worker per core
    inputs = prepare_inputs(args.size)
    results = {name: time_kind(name, inputs, args.repeat) for name in list_edits()}

    print(f"{'edit':<22} {'median ms':>10} {'min-max ms':>16} {'skips':>6}")
    for name, r in results.items():
        spread = f"{r['min_ms']:.2f}-{r['max_ms']:.2f}"
        print(f"{name:<22} {r['median_ms']:>10.2f} {spread:>16} {r['skips']:>6}")
    medians = {k: v["median_ms"] for k, v in results.items()}
    slowest = max(medians, key=medians.__getitem__)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mean_ms = statistics.fmean(medians.values())
    print(
        f"edits: {len(results)} kinds at {args.size}x{args.size}, mean of medians "
        f"{mean_ms:.2f} ms ({1000 / mean_ms:.0f} edits/s/core for a uniform mix), slowest "
        f"{slowest} {medians[slowest]:.2f} ms (median of {args.repeat}), peak RSS {rss_mb:.0f} MB"
    )
    if args.json is not None:
        payload = {
            "size": args.size,
            "repeat": args.repeat,
            "results": results,
            "peak_rss_mb": rss_mb,
            "versions": {
                "python": platform.python_version(),
                "numpy": np.__version__,
                "opencv": cv2.__version__,
            },
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
