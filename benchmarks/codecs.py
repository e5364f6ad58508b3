"""Store layouts and codecs on synth triples: bytes per triple, encode ms and decode ms.

Usage: ``python benchmarks/codecs.py [--n 128] [--size 256] [--repeats 5] [--json out.json]``

The store's codec is paid twice: encode once per triple at build time, decode once per triple
per epoch in every training run. This measures both on the chunks a store holds, for the two
layouts synth has written:

- ``format 2``: one chunk per sample and array: prompt, query and mask apart (the codec sees
  the query alone, although it repeats the prompt outside the mask);
- ``format 3``: one ``images`` chunk holding prompt and query, stored row-interleaved (the
  ``transpose`` codec: each prompt row followed by the same query row), plus the mask chunk;
  ``role-major`` rows store the whole prompt before the whole query instead (not selectable:
  lz4's 64 KiB window cannot reach back a whole image).

on three data sets, made in this process with the same code the builder and the tests use:

- ``toy``: the loader benchmark's triples (``tests/train/store_fixture.py``: tinted textures);
- ``demo``: ``manifests/demo.yaml`` (scikit-image photos and textures, the full edit mix);
- ``coco``: the MetaUAS recipe (``manifests/metauas-coco2017.yaml``) on the 64 COCO photos and
  textures of ``../shared/data`` (skipped when that folder is absent).

Codecs run single-threaded through numcodecs (the library zarr-python writes with and the
direct reader decodes with), decoding into a preallocated array as the loader does. Times are
this process's CPU time (steadier than wall time on a shared machine; the codecs use one
thread). Within a round every variant runs once, in an order rotated each round; one warm-up
round, then the median and min-max over ``--repeats`` rounds. ``*`` marks what a manifest can
select (format 3 with a ``CODECS`` codec).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numcodecs  # noqa: E402
import numpy as np  # noqa: E402
from numcodecs import Blosc, blosc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import triples  # noqa: E402
from synth.store import DEFAULT_CODEC, Codec  # noqa: E402

#: The layout and codec of the stores synth wrote before format 3: the size baseline.
BASELINE = "format 2 blosc-lz4-9"
Triple = triples.Triple


@dataclass(frozen=True)
class Variant:
    """A layout (``separate``, ``rows`` or ``roles``) and a numcodecs codec (None: raw)."""

    layout: str
    codec: Any
    selectable: bool


def variants() -> dict[str, Variant]:
    """label -> variant, the format 2 baseline first."""
    out = {
        BASELINE: Variant("separate", Codec("blosc-lz4", 9).numcodecs(), False),
        "format 2 zstd-3": Variant("separate", Codec("zstd", 3).numcodecs(), False),
    }
    for codec in (
        *(Codec("zstd", v) for v in (1, 2, 3, 5)),
        *(Codec("blosc-lz4", v) for v in (5, 9)),
    ):
        out[f"format 3 {codec}"] = Variant("rows", codec.numcodecs(), True)
    out["format 3 none"] = Variant("rows", None, True)
    out["format 3 role-major zstd-3"] = Variant("roles", Codec("zstd", 3).numcodecs(), False)
    out["format 3 role-major blosc-lz4-9"] = Variant(
        "roles", Codec("blosc-lz4", 9).numcodecs(), False
    )
    out["format 3 blosc-lz4hc-9"] = Variant("rows", Blosc("lz4hc", 9, Blosc.NOSHUFFLE), False)
    out["format 3 blosc-zstd-3"] = Variant("rows", Blosc("zstd", 3, Blosc.NOSHUFFLE), False)
    return out


def _encoder(codec: Any) -> Callable[[np.ndarray], bytes]:
    return (lambda a: a.tobytes()) if codec is None else codec.encode


def _decode_into(codec: Any, buf: bytes, out: np.ndarray) -> None:
    if codec is None:
        np.copyto(out, np.frombuffer(buf, np.uint8).reshape(out.shape))
    else:
        codec.decode(buf, out=out)


def measure(
    data: list[Triple], variants: dict[str, Variant], repeats: int
) -> dict[str, dict[str, Any]]:
    """Per variant: ratio, encode and decode ms per triple (lists over rounds), bytes per triple."""
    raw_bytes = sum(a.nbytes for t in data for a in t)
    laid = {
        lay: [triples.stored_chunks(t, lay) for t in data]
        for lay in {v.layout for v in variants.values()}
    }
    res: dict[str, dict[str, Any]] = {k: {"enc_ms": [], "dec_ms": []} for k in variants}
    names = list(variants)
    for rnd in range(repeats + 1):
        k = rnd % len(names)
        for name in names[k:] + names[:k]:
            variant = variants[name]
            arrays = laid[variant.layout]
            outs = [[np.empty_like(a) for a in t] for t in arrays]
            enc = _encoder(variant.codec)
            t0 = time.process_time()
            encoded = [[enc(a) for a in t] for t in arrays]
            t1 = time.process_time()
            for chunks, out in zip(encoded, outs, strict=True):
                for c, o in zip(chunks, out, strict=True):
                    _decode_into(variant.codec, c, o)
            t2 = time.process_time()
            if rnd == 0:
                comp = sum(len(c) for t in encoded for c in t)
                res[name]["ratio"] = raw_bytes / comp
                res[name]["kb_per_triple"] = comp / len(data) / 1024
                for t, out in zip(arrays, outs, strict=True):  # lossless, checked once
                    assert all(np.array_equal(a, o) for a, o in zip(t, out, strict=True)), name
                continue
            res[name]["enc_ms"].append(1e3 * (t1 - t0) / len(data))
            res[name]["dec_ms"].append(1e3 * (t2 - t1) / len(data))
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128, help="triples per data set")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--datasets", default=",".join(triples.DATASETS), help="comma-separated subset")
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args(argv)
    blosc.use_threads = False  # one core per loader worker: no hidden codec threads
    table = variants()
    default = f"format 3 {Codec.of(DEFAULT_CODEC)}"

    results: dict[str, Any] = {}
    for ds in args.datasets.split(","):
        t = time.perf_counter()
        data = triples.make(ds, args.n, args.size)
        if data is None:
            print(f"\n{ds}: skipped ({triples.SHARED} not found)")
            continue
        raw_kb = sum(a.nbytes for a in data[0]) / 1024
        print(
            f"\n{ds}: {len(data)} triples {args.size}x{args.size}, {raw_kb:.0f} KiB raw each "
            f"(made in {time.perf_counter() - t:.0f}s); median of {args.repeats}, CPU ms per triple"
        )
        res = measure(data, table, args.repeats)
        base_kb = res[BASELINE]["kb_per_triple"]
        base_dec = statistics.median(res[BASELINE]["dec_ms"])
        print(
            f"  {'layout and codec':<32}{'ratio':>6}{'KiB':>6}{'fewer':>7}{'encode':>8}"
            f"{'decode':>8}{'(min-max)':>14}{'vs f2':>7}{'triples/s':>10}"
        )
        rows = {}
        for name, r in res.items():
            enc, dec = statistics.median(r["enc_ms"]), statistics.median(r["dec_ms"])
            spread = f"{min(r['dec_ms']):.2f}-{max(r['dec_ms']):.2f}"
            mark = "*" if table[name].selectable else " "
            fewer = base_kb / r["kb_per_triple"]
            print(
                f"  {mark}{name:<31}{r['ratio']:>6.2f}{r['kb_per_triple']:>6.0f}{fewer:>6.2f}x"
                f"{enc:>8.2f}{dec:>8.3f}{spread:>14}{dec / base_dec:>6.1f}x{1e3 / dec:>10.0f}"
            )
            rows[name] = {
                "ratio": r["ratio"],
                "kib_per_triple": r["kb_per_triple"],
                "fewer_bytes_than_format2": fewer,
                "encode_ms": enc,
                "decode_ms": dec,
                "decode_ms_min": min(r["dec_ms"]),
                "decode_ms_max": max(r["dec_ms"]),
                "decode_time_vs_format2": dec / base_dec,
                "selectable": table[name].selectable,
            }
        results[ds] = {"n": len(data), "raw_kib_per_triple": raw_kb, "rows": rows}

    fewer = {ds: r["rows"][default]["fewer_bytes_than_format2"] for ds, r in results.items()}
    slower = {ds: r["rows"][default]["decode_time_vs_format2"] for ds, r in results.items()}
    print(
        f"\ncodecs: the default, {default}, stores "
        + ", ".join(f"{ds} {v:.2f}x" for ds, v in fewer.items())
        + f" fewer bytes per triple than {BASELINE} and decodes in "
        + ", ".join(f"{ds} {v:.1f}x" for ds, v in slower.items())
        + f" its time (numcodecs {numcodecs.__version__}, one thread, median of {args.repeats})"
    )
    out = {"config": vars(args), "default": default, "baseline": BASELINE, "datasets": results}
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
