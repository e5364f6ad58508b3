"""Where a MetaUAS train step's time goes, float32 against bf16, and what the FLOPs allow.

Usage (CPU, the issue's setting)::

    python benchmarks/train_profile.py --encoder tf_efficientnet_lite0 --size 128 --batch 16

Each round runs ``--steps`` identical steps per precision, alternating float32 / bf16 (A B A B)
after a warm-up; every step is split into loader, augmentation, frozen encoder, alignment,
decoder, loss, backward and optimizer, each timed on its own. float32 is what ``synth train``
did on a CPU before (``--amp`` only meant CUDA); bf16 is ``--amp`` now on a CPU with native bf16
(``synth.train.precision``). The step's FLOPs (forward + backward, torch's FLOP counter) and a
measured matmul peak per precision give the ceiling this CPU allows; the summary line reports
both precisions' samples/s, their ratio and the share of the ceiling reached.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.train_step import write_store  # noqa: E402
from synth.model import MetaUAS, count_parameters  # noqa: E402
from synth.train.augment import augment, batch_to_float  # noqa: E402
from synth.train.config import TrainConfig  # noqa: E402
from synth.train.data import StoreBatches  # noqa: E402
from synth.train.losses import per_sample_loss  # noqa: E402
from synth.train.precision import cpu_has_native_bf16  # noqa: E402

PARTS = ("loader", "augment", "encoder", "align", "decoder", "loss", "backward", "optimizer")


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 8) -> float:
    """GFLOP/s of a large square matmul: the best this CPU does in ``dtype``."""
    a, b = torch.rand(n, n).to(dtype), torch.rand(n, n).to(dtype)
    for _ in range(2):
        a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9


def step_flops(model: MetaUAS, batch: int, size: int) -> float:
    """FLOPs of one forward + backward (the frozen encoder runs forward only)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(batch, 3, size, size)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x, x).float().mean().backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def timed_step(model, optimizer, batches, config, gen, bf16: bool) -> dict[str, float]:
    """One step, each part timed (ms): the same work as ``synth.train.loop.forward_backward``."""
    t = {"start": time.perf_counter()}
    batch = next(batches)
    t["loader"] = time.perf_counter()
    prompt, query, mask = batch_to_float(batch, config.size, True)
    swap = torch.ones(64, dtype=torch.bool)
    prompt, query, mask, _ = augment(
        prompt, query, mask, batch["kind"].long(), config.aug, swap, gen
    )
    t["augment"] = time.perf_counter()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    B = query.shape[0]
    with ctx:
        feats = model.encoder(torch.cat([prompt, query]))
        t["encoder"] = time.perf_counter()
        distances = model.distances(feats, B)
        fused = model.fuse(feats, B, distances)
        t["align"] = time.perf_counter()
        logits = model.decode(fused, distances, tuple(query.shape[-2:]))
        t["decoder"] = time.perf_counter()
    loss = per_sample_loss(config.loss, logits, mask).mean()
    t["loss"] = time.perf_counter()
    loss.backward()
    t["backward"] = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    t["optimizer"] = time.perf_counter()
    keys = ["start", *PARTS]
    return {k: 1000 * (t[k] - t[keys[i]]) for i, k in enumerate(keys[1:])}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="tf_efficientnet_lite0")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--store", default=None, help="existing store (default: write a toy one)")
    ap.add_argument("--steps", type=int, default=4, help="steps per precision per round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads [default: cores]")
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    native = cpu_has_native_bf16()
    modes = ["float32", "bf16"] if native else ["float32"]
    with tempfile.TemporaryDirectory() as tmp:
        url = args.store or str(Path(tmp) / "bench.zarr")
        if args.store is None:
            write_store(url, n=1024, unique=128, size=256, shard=128)
        config = TrainConfig(store=url, out=tmp, encoder=args.encoder, size=args.size)
        torch.manual_seed(0)
        model = MetaUAS(config.model_config(), encoder_weights="random")
        model.to(memory_format=torch.channels_last).train()
        flops = step_flops(model, args.batch, args.size)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
        ds = StoreBatches(url, args.batch)

        def forever():
            epoch = 0
            while True:
                ds.set_epoch(epoch)
                yield from ds
                epoch += 1

        batches, gen = forever(), torch.Generator().manual_seed(0)
        for mode in modes:
            for _ in range(args.warmup):
                timed_step(model, optimizer, batches, config, gen, mode == "bf16")
        parts: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        rates: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.repeats):
            for mode in modes:
                t = time.perf_counter()
                steps = [
                    timed_step(model, optimizer, batches, config, gen, mode == "bf16")
                    for _ in range(args.steps)
                ]
                rates[mode].append(args.steps * args.batch / (time.perf_counter() - t))
                parts[mode].extend(steps)
    peaks = {"float32": matmul_peak(torch.float32)}
    if native:
        peaks["bf16"] = matmul_peak(torch.bfloat16)
    total, learnable = count_parameters(model)
    med = {m: statistics.median(v) for m, v in rates.items()}
    print(
        f"{args.encoder} at {args.size}px, batch {args.batch}, {torch.get_num_threads()} threads, "
        f"{total / 1e6:.1f}M params ({learnable / 1e6:.1f}M learnable); one step = "
        f"{flops / 1e9:.0f} GFLOP ({flops / args.batch / 1e9:.2f} per sample)\n"
    )
    print(f"{'ms per step':<12}" + "".join(f"{p:>10}" for p in PARTS) + f"{'samples/s':>11}")
    table = {}
    for mode in modes:
        row = {p: statistics.median(s[p] for s in parts[mode]) for p in PARTS}
        table[mode] = row
        cells = "".join(f"{row[p]:>10.1f}" for p in PARTS)
        print(f"{mode:<12}{cells}{med[mode]:>11.1f}")
    print()
    limits = {m: peaks[m] * 1e9 / flops * args.batch for m in modes}
    for m in modes:
        print(
            f"{m}: matmul peak {peaks[m]:.0f} GFLOP/s -> at most {limits[m]:.1f} samples/s; "
            f"reached {med[m]:.1f} ({100 * med[m] / limits[m]:.0f}%), "
            f"spread {min(rates[m]):.1f}-{max(rates[m]):.1f}"
        )
    best = "bf16" if native else "float32"
    print(
        f"\ntrain step (CPU): {med[best]:.1f} samples/s with {best}, "
        f"{med[best] / med['float32']:.2f}x float32 ({med['float32']:.1f} samples/s); "
        f"{100 * med[best] / limits[best]:.0f}% of the FLOP limit (median of {args.repeats})"
    )
    result = {
        "config": vars(args),
        "gflop_per_step": flops / 1e9,
        "samples_per_s": med,
        "spread": {m: [min(v), max(v)] for m, v in rates.items()},
        "ms_per_part": table,
        "matmul_peak_gflops": peaks,
        "limit_samples_per_s": limits,
    }
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
