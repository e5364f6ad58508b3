"""Build throughput: synth's shard tasks vs the naive per-triple PNG script, same run.

Both sides make the same triples (same specs, same edit functions) at 256x256 from a
COCO-format source and pay for decoding the sources, the edits, encoding and writing:

- **naive**: a Python loop that, per triple, opens the source images with PIL, decodes the
  annotations with pycocotools' ``COCO.annToMask``, resizes with PIL, runs the same edit and
  writes prompt/query/mask as three PNG files with PIL (``../shared/docs/benchmarks.md``);
- **synth, 1 core**: ``make_shard`` + ``write_shard`` in this process (one worker's work),
  starting each shard with an empty decoded-item cache (``forget_decoded``): on a real dataset
  a worker does not meet a shard's items again in its next shard;
- **synth, 1 vs 2 workers**: shard tasks (each from an empty cache too) on a warm local Dask
  cluster (scaling), with the peak RSS of each worker process.

The defaults make 128 triples from the 64-image subset in shards of 64: two triples per image,
the proportion of ``manifests/metauas-coco2017.yaml``, so each pool holds as many items as the
recipe's (``synth/sample.py``: half a shard of images).

Both sides read the same inputs: the annotations synth's index kept, the texture files synth's
texture source lists (DTD's one folder per class included), and they retry an index with its
next attempt alike. A path synth cannot use stops the run with synth's one-line error.

Sides alternate (A B A B ...) after one warm-up; medians and min-max are reported, and the
ratio is the median of the ratios of each synth run to the naive run just before it.

``--stages`` also times the stages of the one-core synth runs (draw specs, read, decode, resize,
instance masks, textures, each edit kind, encode, write) with wrappers around the functions
that do them, a few per triple, so the totals stay within noise of unwrapped runs. The table
shows where a triple's time goes and which part the naive side pays too (the edits).

    python benchmarks/build.py                       # ../shared/data/coco64 if present
    python benchmarks/build.py --coco DIR --textures DTD/images --repeat 5 --json out.json
    python benchmarks/build.py --stages --no-scaling
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from unittest import mock

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

cv2.setNumThreads(1)  # per-core figures: neither side may spread OpenCV calls over more cores

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synth.errors import SynthError  # noqa: E402
from synth.manifest import parse_manifest  # noqa: E402

SHARED_COCO = REPO.parent / "shared" / "data" / "coco64"
SHARED_TEX = REPO.parent / "shared" / "data" / "textures"


def _fixture(tmp: Path) -> tuple[Path, Path, Path]:
    """COCO-format images (640x480 JPEG) + polygons from scikit-image photos, and textures."""
    import cv2
    from skimage import data

    img_dir, tex_dir = tmp / "images", tmp / "textures"
    img_dir.mkdir(parents=True)
    tex_dir.mkdir()
    names = [
        "astronaut",
        "coffee",
        "chelsea",
        "rocket",
        "hubble_deep_field",
        "immunohistochemistry",
    ]
    images, anns = [], []
    rng = np.random.default_rng(0)
    for i, name in enumerate(names * 4):
        img = cv2.resize(getattr(data, name)(), (640, 480), interpolation=cv2.INTER_AREA)
        fn = f"{i:04d}-{name}.jpg"
        cv2.imwrite(str(img_dir / fn), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        images.append({"id": i + 1, "file_name": fn, "height": 480, "width": 640})
        for k in range(4):
            cx, cy = rng.uniform(100, 540), rng.uniform(100, 380)
            rx, ry = rng.uniform(30, 90), rng.uniform(30, 90)
            t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
            poly = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1).ravel().round(1)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 1 + k % 2,
                    "segmentation": [poly.tolist()],
                    "area": float(np.pi * rx * ry),
                    "bbox": [cx - rx, cy - ry, 2 * rx, 2 * ry],
                    "iscrowd": 0,
                }
            )
    ann_file = tmp / "instances.json"
    ann_file.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": anns,
                "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            }
        )
    )
    for name in ("brick", "grass", "gravel"):
        cv2.imwrite(str(tex_dir / f"{name}.png"), getattr(data, name)())
    return ann_file, img_dir, tex_dir


def _manifest(
    ann_file: Path,
    img_dir: Path,
    tex_dir: Path,
    n: int,
    shard: int,
    size: int,
    sampling: str = "pooled",
    codec: str | None = None,
):
    """The benchmark's manifest: default mix; ``codec`` as ``NAME[-LEVEL]`` (None: default)."""
    from synth.store import Codec

    return parse_manifest(
        {
            "name": "bench",
            "codec": Codec.parse(codec).to_dict() if codec else {},
            "sampling": {"mode": sampling},
            "seed": 0,
            "n": n,
            "size": size,
            "shard_size": shard,
            "sources": {
                "images": [
                    {
                        "name": "coco",
                        "kind": "coco",
                        "ann_file": str(ann_file),
                        "image_root": str(img_dir),
                    }
                ],
                "textures": [{"name": "tex", "kind": "folder", "root": str(tex_dir)}],
            },
        },
        base_dir=None,
    )


def naive_build(manifest, out: Path, indices: range) -> None:
    """What a researcher writes first: PIL + COCO API + the same edit + three PNGs per triple.

    It reads what synth reads: the annotations synth's index kept, the texture files synth's
    texture source lists (DTD's one folder per class included), and it retries an index with
    the next attempt where synth would (an input that does not fit the edit, or fails to load).
    """
    from PIL import Image
    from pycocotools.coco import COCO

    from synth.edits import EDITS, EditInputs, make_params
    from synth.edits.inpaint import create_inpainter
    from synth.errors import SkipSample
    from synth.sample import sample_spec
    from synth.sources.base import Instance, SourceImage

    spec_src = manifest.images[0].options
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(spec_src["ann_file"])
    catalog = _naive_catalog(manifest)
    src, textures = catalog.images[0], catalog.textures[0]
    tex_files = [Path(textures.root) / textures.path(i) for i in range(len(textures))]
    H, W = manifest.size
    inpainter = create_inpainter(dict(manifest.inpainter))

    by_name = {im["file_name"]: im for im in coco.dataset["images"]}

    def load(ref) -> SourceImage:
        fn = src.index.file_name(ref.index)
        info = by_name[fn]
        img = Image.open(Path(spec_src["image_root"]) / fn).convert("RGB")
        arr = np.asarray(img.resize((W, H), Image.BILINEAR))
        lo, hi = src.index.ann_offsets[ref.index], src.index.ann_offsets[ref.index + 1]
        indexed = set(src.index.ann_ids[lo:hi].tolist())
        insts = []
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=info["id"], iscrowd=False)):
            if ann["id"] not in indexed:
                continue
            m = Image.fromarray(coco.annToMask(ann) * 255).resize((W, H), Image.NEAREST)
            mk = np.asarray(m) > 0
            if mk.any():
                insts.append(Instance(mk, ann["category_id"], ann["id"]))
        return SourceImage(fn, arr, tuple(insts))

    def make(spec):
        tex = None
        if spec.texture:
            t = Image.open(tex_files[spec.texture.index]).convert("RGB")
            tex = np.asarray(t.resize((W, H), Image.BILINEAR))
        inputs = EditInputs(
            load(spec.base), load(spec.donor) if spec.donor else None, tex, inpainter
        )
        rng = np.random.Generator(np.random.PCG64(spec.seed))
        params = make_params(spec.kind, manifest.edits.get(spec.kind))
        return EDITS[spec.kind].fn(inputs, rng, params)

    for i in indices:
        for attempt in range(manifest.max_attempts):
            try:
                res = make(sample_spec(manifest, catalog, i, attempt))
                break
            except (SkipSample, OSError):
                continue
        else:
            raise SynthError(f"naive side: sample {i} has no usable inputs")
        Image.fromarray(res.prompt).save(out / f"{i:07d}_prompt.png")
        Image.fromarray(res.query).save(out / f"{i:07d}_query.png")
        Image.fromarray(res.mask * 255).save(out / f"{i:07d}_mask.png")


_NAIVE_CATALOG: dict[str, object] = {}


def _naive_catalog(manifest):
    from synth.sample import Catalog

    key = manifest.fingerprint()
    if key not in _NAIVE_CATALOG:
        _NAIVE_CATALOG[key] = Catalog.open(manifest)
    return _NAIVE_CATALOG[key]


def forget_decoded(manifest) -> None:
    """Empty the worker's cache of decoded source items before a timed synth run.

    The opened catalog (indices, file lists) is kept, as a long-lived worker keeps it, but
    decoded images must not carry over from the previous repetition: on a real dataset a
    worker seldom meets an item twice, and the naive side decodes every item every time.
    """
    from synth.build import _catalog

    _catalog(manifest).cache.clear()


def synth_one_core(manifest, url: str, shards: range) -> None:
    """One worker's work: make and write whole shards in this process (no Dask overhead)."""
    from synth import store as zs
    from synth.build import make_shard

    for s in shards:
        forget_decoded(manifest)
        arrays, record = make_shard(manifest, s)
        zs.write_shard(url, s, arrays, record)


def cold_shard_task(payload: dict, url: str, shard: int) -> dict:
    """``build_shard_task`` starting from an empty decoded-item cache, as ``synth_one_core``.

    On the 64-image subset a worker would otherwise meet the images of its earlier shards
    again, and one worker (every shard) would profit more than each of two (half the shards).
    """
    from synth.build import build_shard_task
    from synth.manifest import parse_manifest

    forget_decoded(parse_manifest(payload, base_dir=None))
    return build_shard_task(payload, url, shard)


def synth_cluster(client, manifest, url: str, shards: list[int]) -> float:
    """Build ``shards`` on the cluster; the largest peak RSS (MB) a worker reported."""
    from distributed import wait

    payload = manifest.to_dict()
    futs = client.map(
        cold_shard_task, [payload] * len(shards), [url] * len(shards), shards, pure=False
    )
    wait(futs)
    return max(f.result()["peak_rss_mb"] for f in futs)


#: (row label, patch target) of the timed stages, in table order. Indented rows run inside the
#: row above them; "edits" is the sum of the per-kind rows that ``stage_timers`` adds.
STAGES = (
    ("draw specs", "synth.sample.sample_spec"),
    ("load images", "synth.sample.Catalog.load_image"),
    ("  read bytes", "synth.sources.coco.read_bytes"),
    ("  decode JPEG", "synth.sources.coco.decode_bgr"),
    ("  resize (area)", "synth.sources.coco.resize_rgb"),
    ("  instance masks", "synth.sources.coco.sample_rles"),
    ("load textures", "synth.sample.Catalog.load_texture"),
    ("encode shard", "synth.store.shard_objects"),
    ("write objects", "synth.store._put_objects"),
)
#: Stages beyond read, decode and edits that no triple can skip: the naive loop pays each too.
NEEDED_STAGES = (
    "  resize (area)",
    "  instance masks",
    "load textures",
    "encode shard",
    "write objects",
)


def _edit_label(kind: str) -> str:
    """The table row of edit ``kind``: indented under "edits", like the nested STAGES rows."""
    return f"  {kind}"


def _timed(totals: dict[str, float], label: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - t0

    return wrapper


@contextlib.contextmanager
def stage_timers(totals: dict[str, float]):
    """Accumulate seconds per stage (``STAGES``, and ``"  <kind>"`` per edit) into ``totals``."""
    import pkgutil

    from synth.edits import EDITS

    with contextlib.ExitStack() as stack:
        for label, target in STAGES:
            owner_name, _, attr = target.rpartition(".")
            owner = pkgutil.resolve_name(owner_name)  # a module or a class
            stack.enter_context(
                mock.patch.object(owner, attr, _timed(totals, label, getattr(owner, attr)))
            )
        timed = {
            k: dataclasses.replace(e, fn=_timed(totals, _edit_label(k), e.fn))
            for k, e in EDITS.items()
        }
        stack.enter_context(mock.patch.dict(EDITS, timed))
        yield


def print_stages(runs: list[dict[str, float]], n: int, naive_ms: float) -> dict[str, float]:
    """Print the median ms per triple of every stage over ``runs``; return that table.

    The last lines are the ratios synth would reach against ``naive_ms`` (the naive loop's ms
    per triple) if it paid only for reading and decoding its images and for the edits, the
    stages no store layout or writer can remove (a ceiling for the speed-ups left elsewhere),
    and if it paid only for the stages every triple needs at their measured costs (no spec
    drawing or bookkeeping): what a target ratio asks of those stages themselves.
    """
    from synth.edits import EDITS

    kinds = [_edit_label(k) for k in sorted(EDITS)]
    top = [label for label, _ in STAGES if not label.startswith("  ")] + ["edits"]
    for r in runs:
        r["edits"] = sum(r.get(k, 0.0) for k in kinds)
        r["other"] = r["total"] - sum(r.get(k, 0.0) for k in top)
    rows = (
        [label for label, _ in STAGES[:-2]]
        + ["edits", *kinds]
        + [label for label, _ in STAGES[-2:]]
    )
    rows += ["other", "total"]
    table = {k: statistics.median(r.get(k, 0.0) for r in runs) * 1e3 / n for k in rows}
    print(f"\nsynth stages, one core (ms per triple, median of {len(runs)} runs)")
    for k in rows:
        share = 100 * table[k] / table["total"]
        print(f"{k:<26}{table[k]:>8.2f}{share:>7.0f}%")
    floor = table["  read bytes"] + table["  decode JPEG"] + table["edits"]
    table["ceiling_ratio"] = naive_ms / floor
    print(
        f"naive loop: {naive_ms:.2f} ms per triple, the same edits included; synth paying only "
        f"read + decode + edits ({floor:.2f} ms) would be {table['ceiling_ratio']:.1f}x"
    )
    needed = floor + sum(table[k] for k in NEEDED_STAGES)
    table["needed_ratio"] = naive_ms / needed
    print(
        f"paying only the stages every triple needs ({' + '.join(s.strip() for s in NEEDED_STAGES)}"
        f" on top: {needed:.2f} ms) it would be {table['needed_ratio']:.1f}x; "
        f"10x asks for {naive_ms / 10:.2f} ms per triple"
    )
    return table


def _inputs(coco: Path | None, textures: Path | None, tmp: Path) -> tuple[Path, Path, Path, str]:
    """(annotation file, image folder, texture folder, description) of a run.

    ``coco`` defaults to ``../shared/data/coco64`` (else a generated fixture), ``textures`` to
    ``../shared/data/textures`` (else the fixture's). Both sides then read these through the
    same source objects; a path synth cannot use is a one-line ``SynthError``.
    """
    if coco is None and SHARED_COCO.is_dir():
        coco = SHARED_COCO
    if coco is None:
        ann, img_dir, tex_dir = _fixture(tmp / "fixture")
        return ann, img_dir, textures or tex_dir, "generated COCO-format fixture (640x480 JPEG)"
    if not (coco / "images").is_dir():
        raise SynthError(
            f"--coco {coco}: no images/ folder; pass a folder holding images/ and "
            "annotations/instances.json"
        )
    tex_dir = textures or SHARED_TEX
    return coco / "annotations" / "instances.json", coco / "images", tex_dir, f"COCO-format {coco}"


def _stats(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--coco", type=Path, default=None, help="COCO dir with images/ + annotations/")
    ap.add_argument("--textures", type=Path, default=None)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--triples", type=int, default=128, help="triples per timed run")
    ap.add_argument("--shard", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--sampling",
        choices=("pooled", "independent"),
        default="pooled",
        help="the manifest's sampling.mode (independent: no decode sharing within a shard)",
    )
    ap.add_argument(
        "--codec", default=None, help="the store's codec, NAME[-LEVEL] (default: synth's default)"
    )
    ap.add_argument("--no-scaling", action="store_true", help="skip the 1 vs 2 worker runs")
    ap.add_argument(
        "--stages", action="store_true", help="also time the stages of the one-core synth runs"
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from synth import store as zs
    from synth.build import layout_for

    tmp = Path(tempfile.mkdtemp(prefix="synth-bench-"))
    try:
        ann, img_dir, tex_dir, source = _inputs(args.coco, args.textures, tmp)
        n = args.triples
        m = _manifest(ann, img_dir, tex_dir, n, args.shard, args.size, args.sampling, args.codec)
        _naive_catalog(m)  # synth's own checks of every path, before either side runs
        n_shards = layout_for(m).n_shards
        naive_s, synth_s, stage_runs = [], [], []
        for rep in range(args.repeat + 1):  # rep 0 = warm-up
            out = tmp / f"naive{rep}"
            out.mkdir()
            t0 = time.perf_counter()
            naive_build(m, out, range(n))
            t_naive = time.perf_counter() - t0
            url = str(tmp / f"s{rep}.zarr")
            zs.create_store(url, layout_for(m), {"kinds": []})
            forget_decoded(m)
            totals: dict[str, float] = defaultdict(float)
            with stage_timers(totals) if args.stages else contextlib.nullcontext():
                t0 = time.perf_counter()
                synth_one_core(m, url, range(n_shards))
                t_synth = time.perf_counter() - t0
            if rep:
                naive_s.append(n / t_naive)
                synth_s.append(n / t_synth)
                stage_runs.append({**totals, "total": t_synth})
            shutil.rmtree(out)
            shutil.rmtree(url)
            print(
                f"  run {rep}{' (warm-up)' if rep == 0 else ''}: naive {n / t_naive:6.1f}  "
                f"synth {n / t_synth:6.1f} triples/s",
                flush=True,
            )
        scaling, peak_rss = {}, {}
        if not args.no_scaling:
            from distributed import Client, LocalCluster

            big = _manifest(
                ann, img_dir, tex_dir, 4 * n, args.shard, args.size, args.sampling, args.codec
            )
            shards = list(range(layout_for(big).n_shards))
            for workers in (1, 2):
                with (
                    LocalCluster(
                        n_workers=workers,
                        threads_per_worker=1,
                        processes=True,
                        host="127.0.0.1",
                        dashboard_address=None,
                    ) as cl,
                    Client(cl) as c,
                ):
                    rates, rss = [], 0.0
                    for rep in range(args.repeat + 1):
                        url = str(tmp / f"w{workers}-{rep}.zarr")
                        zs.create_store(url, layout_for(big), {"kinds": []})
                        t0 = time.perf_counter()
                        rss = max(
                            rss, synth_cluster(c, big, url, shards if rep else shards[:workers])
                        )
                        dt = time.perf_counter() - t0
                        if rep:
                            rates.append(4 * n / dt)
                        shutil.rmtree(url)
                    scaling[workers], peak_rss[workers] = _stats(rates), rss
                    print(
                        f"  {workers} worker(s): {scaling[workers]['median']:.1f} triples/s",
                        flush=True,
                    )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ns, ss = _stats(naive_s), _stats(synth_s)
    # Each synth run is paired with the naive run just before it: the median of the paired
    # ratios cancels the machine's slow and fast spells better than a ratio of medians.
    ratio = statistics.median(b / a for a, b in zip(naive_s, synth_s, strict=True))
    ratios = sorted(b / a for a, b in zip(naive_s, synth_s, strict=True))
    print(
        f"\nsource: {source}; {n} triples of {args.size}x{args.size} per run, default mix, "
        f"codec {m.codec}, "
        f"{args.sampling} sampling, "
        f"median of {args.repeat} (min-max)"
    )
    print(f"{'side':<22}{'triples/s/core':>16}{'min-max':>18}")
    print(f"{'naive PIL+PNG loop':<22}{ns['median']:>16.1f}{ns['min']:>9.1f}-{ns['max']:<8.1f}")
    print(f"{'synth shard task':<22}{ss['median']:>16.1f}{ss['min']:>9.1f}-{ss['max']:<8.1f}")
    result = {
        "naive": ns,
        "synth": ss,
        "ratio": ratio,
        "ratio_min_max": [ratios[0], ratios[-1]],
        "size": args.size,
        "triples": n,
        "source": source,
        "sampling": args.sampling,
        "codec": str(m.codec),
    }
    if scaling:
        sc = scaling[2]["median"] / scaling[1]["median"]
        for w in (1, 2):
            print(
                f"{f'dask {w} worker(s)':<22}{scaling[w]['median']:>16.1f}"
                f"{scaling[w]['min']:>9.1f}-{scaling[w]['max']:<8.1f}  (total, not per core; "
                f"peak RSS per worker {peak_rss[w]:.0f} MB)"
            )
        result["scaling"] = {"1": scaling[1], "2": scaling[2], "speedup": sc}
        result["peak_rss_mb_per_worker"] = max(peak_rss.values())
    print(f"{'paired ratio':<22}{ratio:>15.1f}x{ratios[0]:>9.1f}-{ratios[-1]:<8.1f}")
    line = f"build: {ss['median']:.1f} triples/s/core, {ratio:.1f}x naive baseline"
    if scaling:
        line += (
            f", {result['scaling']['speedup']:.2f}x from 1 to 2 workers, peak RSS "
            f"{result['peak_rss_mb_per_worker']:.0f} MB/worker"
        )
    if args.stages:
        result["stages_ms_per_triple"] = print_stages(stage_runs, n, 1e3 / ns["median"])
        print()
    print(line + f" (median of {args.repeat})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    try:
        main()
    except SynthError as e:  # as the synth command line reports it: one line, status 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
