"""Loader throughput: synth store -> uint8 batches vs a PNG-folder Dataset vs the codec limit.

Usage: ``python benchmarks/loader.py [--data toy|demo|coco] [--codec zstd-2,f2:blosc-lz4-9]
[--n 512] [--size 256] [--workers 1] [--backends direct,tensorstore,zarr] [--json out.json]``

The same triples (``--data``: ``benchmarks/triples.py``; ``coco`` is the MetaUAS recipe on the
64 real COCO photos of ``../shared/data``) are written as one synth store per ``--codec`` entry
(a codec name with an optional level; ``f2:`` before it writes a format 2 store, the layout
synth wrote before format 3, with ``tests/format2_fixture.py``) and once as three PNG files
each. Each round then runs one epoch of every loader, alternating, after a warm-up epoch: the
synth loader of every store (``StoreBatches`` with the direct reader and the tensorstore and
zarr-python backends, one decoder thread per worker), the naive loader (a Dataset that opens
three PNGs with PIL, default collate) with the same worker count, and each store's codec limit
(decoding the same chunk bytes with the same codec into one batch of reused buffers in a tight
loop, one core). Batches are pinned when CUDA is present.

Triples/s per loader core is throughput divided by the worker count; the CPU-time column
(triples per CPU-second of the worker processes) is steadier on a shared machine. The summary
line is for the first store; with several stores a comparison line precedes it.
"""

from __future__ import annotations

import argparse
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

from benchmarks import triples  # noqa: E402
from synth import store as zs  # noqa: E402
from synth.errors import SynthError  # noqa: E402
from synth.store import DEFAULT_CODEC, Codec, StoreReader  # noqa: E402
from synth.train.data import StoreBatches, make_loader  # noqa: E402

#: Prefix of a ``--codec`` entry that asks for a format 2 store.
FORMAT2 = "f2:"


def write_store(url: str, data: list[triples.Triple], shard: int, codec: Codec, fmt: int) -> None:
    """``data`` as a store of format ``fmt`` (2 or 3); kind 0 and no other metadata."""
    from tests.format2_fixture import create_format2_store, write_format2_shard

    size = data[0][0].shape[0]
    layout = zs.Layout(len(data), size, size, shard, codec)
    (create_format2_store if fmt == 2 else zs.create_store)(url, layout, {"kinds": ["a"]})
    for s in range(layout.n_shards):
        start, stop = layout.shard_range(s)
        part = data[start:stop]
        arrays = {
            name: np.full((stop - start, *tail), fill, dtype=dtype)
            for name, (dtype, tail, fill) in zs.META_FIELDS.items()
        }
        arrays["kind"][:] = 0
        arrays["mask"] = np.stack([t[2] for t in part])
        record = {"shard": s, "start": start, "stop": stop}
        if fmt == 2:
            arrays["prompt"] = np.stack([t[0] for t in part])
            arrays["query"] = np.stack([t[1] for t in part])
            write_format2_shard(url, s, arrays, record)
            continue
        arrays["images"] = zs.empty_images(stop - start, size, size)
        for j, t in enumerate(part):
            arrays["images"][j, 0], arrays["images"][j, 1] = t[0], t[1]
        zs.write_shard(url, s, arrays, record)


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


def parse_store(text: str) -> tuple[int, Codec]:
    """(format, codec) of a ``--codec`` entry: ``zstd-3``, ``none``, ``f2:blosc-lz4-9``..."""
    fmt = 2 if text.startswith(FORMAT2) else zs.FORMAT_VERSION
    try:
        return fmt, Codec.parse(text.removeprefix(FORMAT2))
    except SynthError as e:
        raise SystemExit(f"--codec {text!r}: {e}; write [f2:]NAME or [f2:]NAME-LEVEL") from None


def store_label(fmt: int, codec: Codec) -> str:
    return f"{FORMAT2 if fmt == 2 else ''}{codec}"


def codec_chunks(url: str, batch: int) -> tuple[Codec, list[list[bytes]], list[list[np.ndarray]]]:
    """The store's codec, every sample's chunks encoded with it as the store holds them, and
    one batch of outputs."""
    reader = StoreReader(url)
    codec = reader.layout.codec
    enc = codec.numcodecs()
    data = reader.read_range(0, len(reader), fields=("prompt", "query", "mask"))
    layout = "separate" if reader.format_version < 3 else "rows"
    arrays = [
        triples.stored_chunks([data[k][i] for k in ("prompt", "query", "mask")], layout)
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
    ap.add_argument(
        "--codec",
        default=f"{Codec.of(DEFAULT_CODEC)},{FORMAT2}blosc-lz4-9",
        help="comma-separated stores, e.g. zstd-3,none,f2:blosc-lz4-9 (f2: a format 2 store)",
    )
    ap.add_argument("--data", choices=triples.DATASETS, default="toy", help="the triples")
    ap.add_argument("--backends", default="direct,tensorstore,zarr", help="synth readers to run")
    ap.add_argument("--n", type=int, default=512, help="triples")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--shard", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args(argv)
    stores = [parse_store(c) for c in args.codec.split(",")]
    labels = [store_label(*fc) for fc in stores]
    backends = args.backends.split(",")
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pin = device.type == "cuda"

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        data = triples.make(args.data, args.n, args.size)
        if data is None:
            raise SystemExit(f"--data {args.data}: {triples.SHARED} not found")
        made = time.perf_counter() - t
        urls, sizes = {}, {}
        for label, (fmt, codec) in zip(labels, stores, strict=True):
            urls[label] = str(Path(tmp) / f"bench-{label.replace(':', '-')}.zarr")
            write_store(urls[label], data, args.shard, codec, fmt)
            pixels = [Path(urls[label]) / a for a in zs.pixel_arrays(fmt)]
            sizes[label] = sum(
                f.stat().st_size for d in pixels for f in d.rglob("*") if f.is_file()
            )
        del data
        png_root = Path(tmp) / "png"
        png_root.mkdir()
        write_pngs(urls[labels[0]], png_root)
        print(
            f"made {args.n} {args.data} triples {args.size}x{args.size} ({made:.0f}s), wrote "
            f"{len(stores)} store(s) and PNGs ({time.perf_counter() - t - made:.1f}s)"
        )

        loaders = {}
        for label in labels:
            for backend in backends:
                ds = StoreBatches(urls[label], args.batch, backend=backend, threads=1, seed=0)
                loaders[f"synth {label} ({backend})"] = (
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
        limits = {f"codec limit {c}": codec_chunks(urls[c], args.batch) for c in labels}

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
    for codec in labels:
        ours = rows[f"synth {codec} ({backends[0]})"]
        limit = rows[f"codec limit {codec}"]
        per_codec[codec] = {
            "store_mib": sizes[codec] / 2**20,
            "kib_per_triple": sizes[codec] / 1024 / args.n,
            "speedup_vs_naive": med(ours["wall"]) / med(naive_r["wall"]),
            "speedup_vs_naive_cpu": med(ours["cpu"]) / med(naive_r["cpu"]),
            "fraction_of_codec_limit": med(ours["wall"]) / med(limit["wall"]),
            "fraction_of_codec_limit_cpu": med(ours["cpu"]) / med(limit["cpu"]),
        }
        if "tensorstore" in backends and "zarr" in backends:
            per_codec[codec]["tensorstore_vs_zarr"] = med(
                rows[f"synth {codec} (tensorstore)"]["wall"]
            ) / med(rows[f"synth {codec} (zarr)"]["wall"])
    first = labels[0]
    result = {
        "config": vars(args) | {"pinned": pin, "device": str(device)},
        "rows": {k: {m: med(v) for m, v in r.items()} for k, r in rows.items()},
        "codecs": per_codec,
        **per_codec[first],
    }
    if len(labels) > 1:
        print(
            f"\nby store ({backends[0]} reader vs naive, store size of the pixel arrays): "
            + "; ".join(
                f"{c} {v['speedup_vs_naive']:.1f}x naive, "
                f"{100 * v['fraction_of_codec_limit']:.0f}% of its limit, "
                f"{v['kib_per_triple']:.0f} KiB/triple"
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
        f"\nloader: {med(ours['wall']):.0f} triples/s/core at {args.size}px {args.data} "
        f"triples with {first} "
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
