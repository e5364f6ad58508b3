"""Chunk codecs on synth triples: per-triple encode ms, decode ms and compression ratio.

Usage: ``python benchmarks/codecs.py [--n 128] [--size 256] [--repeats 5] [--json out.json]``

The store's codec is paid twice: encode once per triple at build time, decode once per triple
per epoch in every training run. This measures both on the chunks a store holds (one chunk per
sample and array: prompt, query, mask) for three data sets, made in this process with the same
code the builder and the tests use:

- ``toy``: the loader benchmark's triples (``tests/train/store_fixture.py``: tinted textures);
- ``demo``: ``manifests/demo.yaml`` (scikit-image photos and textures, the full edit mix);
- ``coco``: the MetaUAS recipe (``manifests/metauas-coco2017.yaml``) on the 64 COCO photos and
  DTD textures of ``../shared/data`` (skipped when that folder is absent).

Codecs run single-threaded through numcodecs (the library zarr-python writes with and the
direct reader decodes with), decoding into a preallocated array as the loader does. Times are
this process's CPU time (steadier than wall time on a shared machine; the codecs use one
thread). Within a round every codec runs once, in an order rotated each round; one warm-up
round, then the median and min-max over ``--repeats`` rounds. ``*`` marks codecs a manifest can
select.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numcodecs  # noqa: E402
import numpy as np  # noqa: E402
from numcodecs import Blosc, blosc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synth.store import DEFAULT_CODEC, Codec  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
BASELINE = "zstd-3"
Triple = list[np.ndarray]


def variants() -> dict[str, tuple[Any, bool]]:
    """label -> (numcodecs codec or None for raw bytes, selectable in a manifest)."""
    out: dict[str, tuple[Any, bool]] = {}
    for codec in (Codec("zstd", 1), Codec("zstd", 3), *(Codec("blosc-lz4", v) for v in (1, 5, 9))):
        out[str(codec)] = (codec.numcodecs(), True)
    out["blosc-lz4-5 byteshuffle"] = (Blosc("lz4", 5, Blosc.SHUFFLE), False)
    out["blosc-lz4-5 bitshuffle"] = (Blosc("lz4", 5, Blosc.BITSHUFFLE), False)
    out["blosc-lz4hc-5"] = (Blosc("lz4hc", 5, Blosc.NOSHUFFLE), False)
    out["blosc-zstd-1"] = (Blosc("zstd", 1, Blosc.NOSHUFFLE), False)
    out["none (bytes)"] = (None, True)
    return out


def toy_triples(n: int, size: int) -> list[Triple]:
    spec = importlib.util.spec_from_file_location(
        "store_fixture", ROOT / "tests" / "train" / "store_fixture.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    textures = mod.load_textures()
    return [list(mod.make_triple(i, size, 0, textures)[:3]) for i in range(n)]


def manifest_triples(raw: dict[str, Any], n: int, size: int) -> list[Triple]:
    """The first ``n`` triples the builder makes for manifest ``raw`` (no store written)."""
    from synth.build import make_shard
    from synth.manifest import parse_manifest

    manifest = parse_manifest({**raw, "n": n, "size": size, "shard_size": 64}, base_dir=None)
    out: list[Triple] = []
    for shard in range(-(-n // 64)):
        arrays, _ = make_shard(manifest, shard)
        out += [
            [arrays[k][j] for k in ("prompt", "query", "mask")] for j in range(len(arrays["mask"]))
        ]
    return out


def demo_raw() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((ROOT / "manifests" / "demo.yaml").read_text())


def coco_raw() -> dict[str, Any] | None:
    import yaml

    if not (SHARED / "coco64" / "images").is_dir() or not (SHARED / "textures").is_dir():
        return None
    raw = yaml.safe_load((ROOT / "manifests" / "metauas-coco2017.yaml").read_text())
    coco = raw["sources"]["images"][0]
    coco.update(
        ann_file=str(SHARED / "coco64" / "annotations" / "instances.json"),
        image_root=str(SHARED / "coco64" / "images"),
    )
    coco.pop("cache_dir", None)
    raw["sources"]["textures"][0]["root"] = str(SHARED / "textures")
    return raw


def _encoder(codec: Any) -> Callable[[np.ndarray], bytes]:
    return (lambda a: a.tobytes()) if codec is None else codec.encode


def _decode_into(codec: Any, buf: bytes, out: np.ndarray) -> None:
    if codec is None:
        np.copyto(out, np.frombuffer(buf, np.uint8).reshape(out.shape))
    else:
        codec.decode(buf, out=out)


def measure(
    triples: list[Triple], codecs: dict[str, tuple[Any, bool]], repeats: int
) -> dict[str, dict[str, Any]]:
    """Per codec: ratio, encode and decode ms per triple (lists over rounds), bytes per triple."""
    raw_bytes = sum(a.nbytes for t in triples for a in t)
    outs = [[np.empty_like(a) for a in t] for t in triples]
    res: dict[str, dict[str, Any]] = {k: {"enc_ms": [], "dec_ms": []} for k in codecs}
    names = list(codecs)
    for rnd in range(repeats + 1):
        k = rnd % len(names)
        for name in names[k:] + names[:k]:
            codec = codecs[name][0]
            enc = _encoder(codec)
            t0 = time.process_time()
            encoded = [[enc(a) for a in t] for t in triples]
            t1 = time.process_time()
            for chunks, out in zip(encoded, outs, strict=True):
                for c, o in zip(chunks, out, strict=True):
                    _decode_into(codec, c, o)
            t2 = time.process_time()
            if rnd == 0:
                comp = sum(len(c) for t in encoded for c in t)
                res[name]["ratio"] = raw_bytes / comp
                res[name]["kb_per_triple"] = comp / len(triples) / 1024
                for t, out in zip(triples, outs, strict=True):  # lossless, checked once
                    assert all(np.array_equal(a, o) for a, o in zip(t, out, strict=True)), name
                continue
            res[name]["enc_ms"].append(1e3 * (t1 - t0) / len(triples))
            res[name]["dec_ms"].append(1e3 * (t2 - t1) / len(triples))
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128, help="triples per data set")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--datasets", default="toy,demo,coco", help="comma-separated subset")
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args(argv)
    blosc.use_threads = False  # one core per loader worker: no hidden codec threads
    codecs = variants()
    default = str(Codec.of(DEFAULT_CODEC))

    makers: dict[str, Callable[[], list[Triple] | None]] = {
        "toy": lambda: toy_triples(args.n, args.size),
        "demo": lambda: manifest_triples(demo_raw(), args.n, args.size),
        "coco": lambda: (lambda r: None if r is None else manifest_triples(r, args.n, args.size))(
            coco_raw()
        ),
    }
    results: dict[str, Any] = {}
    for ds in args.datasets.split(","):
        t = time.perf_counter()
        triples = makers[ds]()
        if triples is None:
            print(f"\n{ds}: skipped ({SHARED} not found)")
            continue
        raw_kb = sum(a.nbytes for a in triples[0]) / 1024
        print(
            f"\n{ds}: {len(triples)} triples {args.size}x{args.size}, {raw_kb:.0f} KiB raw each "
            f"(made in {time.perf_counter() - t:.0f}s); median of {args.repeats}, CPU ms per triple"
        )
        res = measure(triples, codecs, args.repeats)
        base = statistics.median(res[BASELINE]["dec_ms"])
        print(
            f"  {'codec':<26}{'ratio':>6}{'KiB':>6}{'encode':>8}{'decode':>8}"
            f"{'(min-max)':>14}{'vs zstd-3':>10}{'triples/s':>10}"
        )
        rows = {}
        for name, r in res.items():
            enc, dec = statistics.median(r["enc_ms"]), statistics.median(r["dec_ms"])
            spread = f"{min(r['dec_ms']):.2f}-{max(r['dec_ms']):.2f}"
            mark = "*" if codecs[name][1] else " "
            print(
                f"  {mark}{name:<25}{r['ratio']:>6.2f}{r['kb_per_triple']:>6.0f}{enc:>8.2f}"
                f"{dec:>8.3f}{spread:>14}{base / dec:>9.1f}x{1e3 / dec:>10.0f}"
            )
            rows[name] = {
                "ratio": r["ratio"],
                "kib_per_triple": r["kb_per_triple"],
                "encode_ms": enc,
                "decode_ms": dec,
                "decode_ms_min": min(r["dec_ms"]),
                "decode_ms_max": max(r["dec_ms"]),
                "decode_speedup_vs_zstd3": base / dec,
                "selectable": codecs[name][1],
            }
        results[ds] = {"n": len(triples), "raw_kib_per_triple": raw_kb, "rows": rows}

    speed = {ds: r["rows"][default]["decode_speedup_vs_zstd3"] for ds, r in results.items()}
    size = {
        ds: r["rows"][BASELINE]["ratio"] / r["rows"][default]["ratio"] for ds, r in results.items()
    }
    print(
        f"\ncodecs: default {default} decodes "
        + ", ".join(f"{ds} {v:.1f}x" for ds, v in speed.items())
        + " faster than zstd-3 per triple, for a store "
        + ", ".join(f"{ds} {v:.2f}x" for ds, v in size.items())
        + f" the size (numcodecs {numcodecs.__version__}, one thread, median of {args.repeats})"
    )
    out = {"config": vars(args), "default": default, "datasets": results}
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
