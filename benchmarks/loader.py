"""Loader throughput: synth store -> uint8 batches vs a PNG-folder Dataset vs the zstd codec limit.

Usage: ``python benchmarks/loader.py [--n 512] [--size 256] [--workers 1] [--json out.json]``

The same toy triples (tests/train/store_fixture.py) are written once as a synth store and once
as three PNG files each. Each round then runs one epoch of every loader, alternating, after a
warm-up epoch: the synth loader (``StoreBatches`` with the tensorstore and the zarr-python
backends, one decoder thread per worker), the naive loader (a Dataset that opens three PNGs
with PIL, default collate) with the same worker count, and the codec limit (zstd decode of the
same chunk bytes in a tight loop, one core). Batches are pinned when CUDA is present.

Triples/s per loader core is throughput divided by the worker count; the CPU-time column
(triples per CPU-second of the worker processes) is steadier on a shared machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, Dataset

# PIL arrays are read-only; the baseline only reads them (workers re-run this module).
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synth.store import StoreReader  # noqa: E402
from synth.train.data import StoreBatches, make_loader  # noqa: E402


def _fixture():
    spec = importlib.util.spec_from_file_location(
        "store_fixture", ROOT / "tests" / "train" / "store_fixture.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class PngTriples(Dataset):
    """The folder-of-PNGs baseline: three PIL opens per item."""

    def __init__(self, root: Path, n: int):
        self.root, self.n = root, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        from PIL import Image

        out = {}
        for name in ("prompt", "query", "mask"):
            with Image.open(self.root / f"{i:06d}_{name}.png") as im:
                out[name] = torch.from_numpy(np.asarray(im))
        return out


def write_pngs(url: str, root: Path) -> int:
    import cv2

    reader = StoreReader(url)
    n = len(reader)
    for start in range(0, n, 64):
        data = reader.read_range(start, min(n, start + 64), fields=("prompt", "query", "mask"))
        for j in range(len(data["mask"])):
            i = start + j
            cv2.imwrite(str(root / f"{i:06d}_prompt.png"), data["prompt"][j][..., ::-1])
            cv2.imwrite(str(root / f"{i:06d}_query.png"), data["query"][j][..., ::-1])
            cv2.imwrite(str(root / f"{i:06d}_mask.png"), data["mask"][j])
    return n


def _epoch(loader, workers: int) -> tuple[float, float, int, float]:
    """(seconds, worker CPU seconds, triples, peak worker RSS MiB) of one pass over ``loader``."""
    it = iter(loader)
    procs = [psutil.Process(w.pid) for w in getattr(it, "_workers", [])]
    if not procs:
        procs = [psutil.Process()]
    cpu0 = sum(sum(p.cpu_times()[:2]) for p in procs)
    t0 = time.perf_counter()
    n, peak = 0, 0.0
    for batch in it:
        n += len(batch["mask"])
        peak = max(peak, max(p.memory_info().rss for p in procs) / 2**20)
    dt = time.perf_counter() - t0
    cpu = sum(sum(p.cpu_times()[:2]) for p in procs) - cpu0
    return dt, cpu, n, peak


def codec_limit(url: str, repeat: int = 2) -> tuple[float, float]:
    """(seconds, triples) of zstd-decoding every sample's three chunks in one thread."""
    import numcodecs

    reader = StoreReader(url)
    level = reader.layout.zstd_level
    codec = numcodecs.Zstd(level=level)
    data = reader.read_range(0, len(reader), fields=("prompt", "query", "mask"))
    chunks = [
        [codec.encode(np.ascontiguousarray(data[k][i])) for k in ("prompt", "query", "mask")]
        for i in range(len(reader))
    ]
    t0 = time.perf_counter()
    for _ in range(repeat):
        for triple in chunks:
            for c in triple:
                codec.decode(c)
    return time.perf_counter() - t0, repeat * len(chunks)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="triples")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--shard", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pin = device.type == "cuda"

    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp) / "bench.zarr")
        t = time.perf_counter()
        _fixture().write_toy_store(url, args.n, args.size, args.shard, seed=0)
        png_root = Path(tmp) / "png"
        png_root.mkdir()
        write_pngs(url, png_root)
        print(f"wrote {args.n} triples {args.size}x{args.size} ({time.perf_counter() - t:.1f}s)")

        loaders = {}
        for backend in ("direct", "tensorstore", "zarr"):
            ds = StoreBatches(url, args.batch, backend=backend, threads=1, seed=0)
            loaders[f"synth ({backend})"] = (
                ds,
                make_loader(ds, workers=args.workers, device=device),
            )
        naive = DataLoader(
            PngTriples(png_root, args.n),
            batch_size=args.batch,
            shuffle=True,
            num_workers=args.workers,
            pin_memory=pin,
            persistent_workers=args.workers > 0,
            multiprocessing_context="forkserver" if args.workers else None,
        )
        loaders["naive PNG + PIL"] = (None, naive)

        rows: dict[str, dict[str, list[float]]] = {
            k: {"wall": [], "cpu": [], "rss": []} for k in [*loaders, "codec limit (zstd)"]
        }
        cores = max(1, args.workers)
        for rnd in range(args.repeats + 1):
            for name, (ds, loader) in loaders.items():
                if ds is not None:
                    ds.set_epoch(rnd)
                dt, cpu, n, rss = _epoch(loader, args.workers)
                if rnd:  # round 0 warms up (worker start, page cache, imports)
                    rows[name]["wall"].append(n / dt / cores)
                    rows[name]["cpu"].append(n / max(cpu, 1e-9))
                    rows[name]["rss"].append(rss)
            dt, n = codec_limit(url, repeat=1)
            if rnd:
                rows["codec limit (zstd)"]["wall"].append(n / dt)
                rows["codec limit (zstd)"]["cpu"].append(n / dt)
                rows["codec limit (zstd)"]["rss"].append(psutil.Process().memory_info().rss / 2**20)

    def med(v: list[float]) -> float:
        return statistics.median(v)

    head = ("loader", "triples/s/core", "(min-max)", "per CPU-s", "peak RSS MiB")
    print(f"\n{head[0]:<22}{head[1]:>16}{head[2]:>18}{head[3]:>12}{head[4]:>14}")
    for name, r in rows.items():
        spread = f"{min(r['wall']):.0f}-{max(r['wall']):.0f}"
        print(
            f"{name:<22}{med(r['wall']):>16.0f}{spread:>18}{med(r['cpu']):>12.0f}{med(r['rss']):>14.0f}"
        )
    ours, naive_r = rows["synth (direct)"], rows["naive PNG + PIL"]
    codec = rows["codec limit (zstd)"]
    result = {
        "config": vars(args) | {"pinned": pin, "device": str(device)},
        "rows": {k: {m: med(v) for m, v in r.items()} for k, r in rows.items()},
        "speedup_vs_naive": med(ours["wall"]) / med(naive_r["wall"]),
        "speedup_vs_naive_cpu": med(ours["cpu"]) / med(naive_r["cpu"]),
        "fraction_of_codec_limit": med(ours["wall"]) / med(codec["wall"]),
        "fraction_of_codec_limit_cpu": med(ours["cpu"]) / med(codec["cpu"]),
        "tensorstore_vs_zarr": med(rows["synth (tensorstore)"]["wall"])
        / med(rows["synth (zarr)"]["wall"]),
    }
    print(
        f"\nloader: {med(ours['wall']):.0f} triples/s/core at {args.size}px "
        f"({'pinned' if pin else 'unpinned: no CUDA'}), "
        f"{result['speedup_vs_naive']:.1f}x naive PNG loader, "
        f"{100 * result['fraction_of_codec_limit']:.0f}% of the codec limit, "
        f"tensorstore {result['tensorstore_vs_zarr']:.1f}x zarr-python "
        f"(median of {args.repeats}; per CPU-s: "
        f"{result['speedup_vs_naive_cpu']:.1f}x naive, "
        f"{100 * result['fraction_of_codec_limit_cpu']:.0f}% of codec)"
    )
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
