"""Train-step throughput: the real store loader vs synthetic batches already on the device.

Usage (on a GPU machine)::

    python benchmarks/train_step.py --encoder efficientnet_b4 --size 256 --batch 128 --workers 4

A local toy store is written first (``--unique`` generated triples repeated up to ``--n``
samples; decode cost does not depend on repetition), or ``--store`` names an existing one.
Both sides run the identical step (``synth.train.loop.forward_backward`` + AdamW): uint8 batch
on the device, float conversion, augmentation, forward, backward, optimizer step. "synthetic"
reuses one batch that already sits on the device, the ceiling; "real" takes every batch from
``StoreBatches`` through pinned memory. Rounds alternate A/B after a warm-up; the summary line
gives the real loader's fraction of the ceiling (target >= 95%).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synth import store as zs  # noqa: E402
from synth.model import MetaUAS, count_parameters  # noqa: E402
from synth.train.config import TrainConfig  # noqa: E402
from synth.train.data import StoreBatches, make_loader, reader_threads, to_device  # noqa: E402
from synth.train.loop import forward_backward  # noqa: E402


def write_store(url: str, n: int, unique: int, size: int, shard: int) -> None:
    """``n`` samples cycling through ``unique`` generated toy triples."""
    spec = importlib.util.spec_from_file_location(
        "store_fixture", ROOT / "tests" / "train" / "store_fixture.py"
    )
    fx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fx)
    textures = fx.load_textures()
    triples = [fx.make_triple(i, size, 0, textures) for i in range(unique)]
    layout = zs.Layout(n=n, height=size, width=size, shard_size=shard)
    zs.create_store(url, layout, {"kinds": list(fx.KINDS)})
    for s in range(layout.n_shards):
        start, stop = layout.shard_range(s)
        picks = [triples[i % unique] for i in range(start, stop)]
        arrays = {
            name: np.full((stop - start, *tail), fill, dtype=dtype)
            for name, (dtype, tail, fill) in zs.META_FIELDS.items()
        }
        images = zs.empty_images(stop - start, size, size)
        images[:, 0] = np.stack([t[0] for t in picks])
        images[:, 1] = np.stack([t[1] for t in picks])
        arrays.update(
            images=images,
            mask=np.stack([t[2] for t in picks]),
            kind=np.array([t[3] for t in picks], dtype=np.int8),
        )
        zs.write_shard(url, s, arrays, {"shard": s})


def _batches(ds: StoreBatches, loader):
    epoch = 0
    while True:
        ds.set_epoch(epoch)
        yield from loader
        epoch += 1


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="efficientnet_b4")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--store", default=None, help="existing store (default: write a toy one)")
    ap.add_argument("--n", type=int, default=4096, help="samples of the toy store")
    ap.add_argument("--unique", type=int, default=256, help="distinct toy triples")
    ap.add_argument("--steps", type=int, default=20, help="steps per round")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--no-amp", dest="amp", action="store_false")
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args(argv)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    with tempfile.TemporaryDirectory() as tmp:
        url = args.store
        if url is None:
            url = str(Path(tmp) / "bench.zarr")
            t = time.perf_counter()
            write_store(url, args.n, args.unique, args.size, shard=128)
            print(f"wrote {args.n} samples at {args.size}px ({time.perf_counter() - t:.0f}s)")
        config = TrainConfig(
            store=url,
            out=tmp,
            encoder=args.encoder,
            size=args.size,
            batch_size=args.batch,
            amp=args.amp,
        )
        torch.manual_seed(0)
        model = MetaUAS(config.model_config()).to(device).to(memory_format=torch.channels_last)
        total, learnable = count_parameters(model)
        net = torch.compile(model) if args.compile else model
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=config.lr, fused=cuda
        )
        ds = StoreBatches(url, args.batch, threads=reader_threads(args.workers))
        loader = make_loader(ds, workers=args.workers, device=device)
        swap_allowed = torch.ones(max(1, len(ds.kind_names)), dtype=torch.bool, device=device)
        gen = torch.Generator(device).manual_seed(0)
        real = _batches(ds, loader)
        fixed = to_device(next(real), device)

        def run(source: str, steps: int) -> float:
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                batch = fixed if source == "synthetic" else to_device(next(real), device)
                forward_backward(net, batch, config, swap_allowed, gen)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            sync()
            return steps * args.batch / (time.perf_counter() - t0)

        model.train()
        for source in ("synthetic", "real"):
            run(source, args.warmup)
        rates: dict[str, list[float]] = {"synthetic": [], "real": []}
        for _ in range(args.repeats):
            for source in rates:
                rates[source].append(run(source, args.steps))
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")

    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\n{'batches from':<14}{'samples/s':>12}{'(min-max)':>20}")
    for k, v in rates.items():
        print(f"{k:<14}{med[k]:>12.1f}{f'{min(v):.1f}-{max(v):.1f}':>20}")
    ratio = med["real"] / med["synthetic"]
    print(
        f"\ntrain step: real loader {med['real']:.0f} samples/s = {100 * ratio:.1f}% of on-device "
        f"synthetic batches ({med['synthetic']:.0f} samples/s); {args.encoder} at {args.size}px, "
        f"batch {args.batch}, {args.workers} workers, {name}, peak {peak:.1f} GiB, "
        f"{total / 1e6:.1f}M params ({learnable / 1e6:.1f}M learnable) (median of {args.repeats})"
    )
    result = {
        "config": vars(args) | {"device": name},
        "samples_per_s": med,
        "spread": {k: [min(v), max(v)] for k, v in rates.items()},
        "real_over_synthetic": ratio,
        "peak_gib": peak,
    }
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
