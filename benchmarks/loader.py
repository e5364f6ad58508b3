"""Loader throughput: synth store -> uint8 batches vs a PNG-folder Dataset vs the codec limit.

Usage: ``python benchmarks/loader.py [--codec blosc-lz4,zstd-3,none] [--n 512] [--size 256]
[--workers 1] [--backends direct,tensorstore,zarr] [--json out.json]``

The same toy triples (tests/train/store_fixture.py) are written as one synth store per
``--codec`` (default: the store's default codec; ``zstd-3``, ``blosc-lz4-9``, ``none``: name
and optional level) and once as three PNG files each. Each round then runs one epoch of every
loader, alternating, after a warm-up epoch: the synth loader of every store (``StoreBatches``
with the direct reader and the tensorstore and zarr-python backends, one decoder thread per
worker), the naive loader (a Dataset that opens three PNGs with PIL, default collate) with the
same worker count, and each store's codec limit (decoding the same chunk bytes with the same
codec into one batch of reused buffers in a tight loop, one core). Batches are pinned when CUDA
is present.

Triples/s per loader core is throughput divided by the worker count; the CPU-time column
(triples per CPU-second of the worker processes) is steadier on a shared machine. The summary
line is for the first codec; with several codecs a comparison line precedes it.
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

from synth.errors import SynthError  # noqa: E402
from synth.store import DEFAULT_CODEC, Codec, StoreReader  # noqa: E402
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


def parse_codec(text: str) -> Codec:
    """``zstd``, ``zstd-3``, ``blosc-lz4-9``, ``none``: a codec name, optionally ``-LEVEL``."""
    name, _, level = text.rpartition("-")
    if not level.isdigit():
        name, level = text, ""
    try:
        return Codec.of(name, int(level) if level.isdigit() else None)
    except SynthError as e:
        raise SystemExit(f"--codec {text!r}: {e}; write NAME or NAME-LEVEL") from None


def codec_chunks(url: str, batch: int) -> tuple[Codec, list[list[bytes]], list[list[np.ndarray]]]:
    """The store's codec, every sample's three chunks encoded with it, and one batch of outputs."""
    reader = StoreReader(url)
    codec = reader.layout.codec
    enc = codec.numcodecs()
    data = reader.read_range(0, len(reader), fields=("prompt", "query", "mask"))
    arrays = [
        [np.ascontiguousarray(data[k][i]) for k in ("prompt", "query", "mask")]
        for i in range(len(reader))
    ]
    chunks = [[a.tobytes() if enc is None else enc.encode(a) for a in t] for t in arrays]
    return codec, chunks, [[np.empty_like(a) for a in t] for t in arrays[:batch]]


def codec_limit(
    codec: Codec, chunks: list[list[bytes]], outs: list[list[np.ndarray]]
) -> tuple[float, float, int]:
    """(seconds, CPU seconds, triples) of decoding every triple's chunks with ``codec``.

    One thread, into a batch of reused output buffers: the floor of the loader's work.
    """
    from numcodecs import blosc

    blosc.use_threads = False  # as in the loader: one core, no codec thread pool
    dec = codec.numcodecs()
    t0, c0 = time.perf_counter(), time.process_time()
    for j, triple in enumerate(chunks):
        for c, o in zip(triple, outs[j % len(outs)], strict=True):
            if dec is None:
                np.copyto(o, np.frombuffer(c, np.uint8).reshape(o.shape))
            else:
                dec.decode(c, out=o)
    return time.perf_counter() - t0, time.process_time() - c0, len(chunks)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", default=DEFAULT_CODEC, help="comma-separated, e.g. zstd-3,none")
    ap.add_argument("--backends", default="direct,tensorstore,zarr", help="synth readers to run")
    ap.add_argument("--n", type=int, default=512, help="triples")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--shard", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args(argv)
    codecs = [parse_codec(c) for c in args.codec.split(",")]
    backends = args.backends.split(",")
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pin = device.type == "cuda"

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        fixture = _fixture()
        urls, sizes = {}, {}
        for codec in codecs:
            urls[str(codec)] = str(Path(tmp) / f"bench-{codec}.zarr")
            fixture.write_toy_store(urls[str(codec)], args.n, args.size, args.shard, 0, codec=codec)
            pixels = [Path(urls[str(codec)]) / a for a in ("prompt", "query", "mask")]
            sizes[str(codec)] = sum(
                f.stat().st_size for d in pixels for f in d.rglob("*") if f.is_file()
            )
        png_root = Path(tmp) / "png"
        png_root.mkdir()
        write_pngs(urls[str(codecs[0])], png_root)
        print(
            f"wrote {args.n} triples {args.size}x{args.size} as {len(codecs)} store(s) and PNGs "
            f"({time.perf_counter() - t:.1f}s)"
        )

        loaders = {}
        for codec in codecs:
            for backend in backends:
                ds = StoreBatches(urls[str(codec)], args.batch, backend=backend, threads=1, seed=0)
                loaders[f"synth {codec} ({backend})"] = (
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
        limits = {f"codec limit {c}": codec_chunks(urls[str(c)], args.batch) for c in codecs}

        rows: dict[str, dict[str, list[float]]] = {
            k: {"wall": [], "cpu": [], "rss": []} for k in [*loaders, *limits]
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
            for name, chunks in limits.items():
                dt, cpu, n = codec_limit(*chunks)
                if rnd:
                    rows[name]["wall"].append(n / dt)
                    rows[name]["cpu"].append(n / max(cpu, 1e-9))
                    rows[name]["rss"].append(psutil.Process().memory_info().rss / 2**20)

    def med(v: list[float]) -> float:
        return statistics.median(v)

    head = ("loader", "triples/s/core", "(min-max)", "per CPU-s", "peak RSS MiB")
    width = max(len(k) for k in rows) + 2
    print(f"\n{head[0]:<{width}}{head[1]:>16}{head[2]:>18}{head[3]:>12}{head[4]:>14}")
    for name, r in rows.items():
        spread = f"{min(r['wall']):.0f}-{max(r['wall']):.0f}"
        print(
            f"{name:<{width}}{med(r['wall']):>16.0f}{spread:>18}{med(r['cpu']):>12.0f}"
            f"{med(r['rss']):>14.0f}"
        )
    naive_r = rows["naive PNG + PIL"]
    per_codec = {}
    for codec in codecs:
        ours = rows[f"synth {codec} ({backends[0]})"]
        limit = rows[f"codec limit {codec}"]
        per_codec[str(codec)] = {
            "store_mib": sizes[str(codec)] / 2**20,
            "speedup_vs_naive": med(ours["wall"]) / med(naive_r["wall"]),
            "speedup_vs_naive_cpu": med(ours["cpu"]) / med(naive_r["cpu"]),
            "fraction_of_codec_limit": med(ours["wall"]) / med(limit["wall"]),
            "fraction_of_codec_limit_cpu": med(ours["cpu"]) / med(limit["cpu"]),
        }
        if "tensorstore" in backends and "zarr" in backends:
            per_codec[str(codec)]["tensorstore_vs_zarr"] = med(
                rows[f"synth {codec} (tensorstore)"]["wall"]
            ) / med(rows[f"synth {codec} (zarr)"]["wall"])
    first = str(codecs[0])
    result = {
        "config": vars(args) | {"pinned": pin, "device": str(device)},
        "rows": {k: {m: med(v) for m, v in r.items()} for k, r in rows.items()},
        "codecs": per_codec,
        **per_codec[first],
    }
    if len(codecs) > 1:
        print(
            f"\nby codec ({backends[0]} reader vs naive, store size of the pixel arrays): "
            + "; ".join(
                f"{c} {v['speedup_vs_naive']:.1f}x naive, "
                f"{100 * v['fraction_of_codec_limit']:.0f}% of its limit, {v['store_mib']:.1f} MiB"
                for c, v in per_codec.items()
            )
        )
    ours = rows[f"synth {first} ({backends[0]})"]
    r = per_codec[first]
    ts_vs_zarr = (
        f", tensorstore {r['tensorstore_vs_zarr']:.1f}x zarr-python"
        if "tensorstore_vs_zarr" in r
        else ""
    )
    print(
        f"\nloader: {med(ours['wall']):.0f} triples/s/core at {args.size}px with {first} "
        f"({backends[0]} reader, {'pinned' if pin else 'unpinned: no CUDA'}), "
        f"{r['speedup_vs_naive']:.1f}x naive PNG loader, "
        f"{100 * r['fraction_of_codec_limit']:.0f}% of the {first} codec limit{ts_vs_zarr} "
        f"(median of {args.repeats}; per CPU-s: "
        f"{r['speedup_vs_naive_cpu']:.1f}x naive, "
        f"{100 * r['fraction_of_codec_limit_cpu']:.0f}% of codec)"
    )
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
