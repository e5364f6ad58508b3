"""Tar-sharded source (``kind: sa1b``) at SA-1B scale: index cost, memory, build throughput.

An SA-1B-format corpus of ``--tars`` tars x ``--images`` images is written first: real photos
(``../shared/data/coco64`` with its instances and ``camvid`` with its objects when present,
else scikit-image's photos with rectangles), repeated under varied names (``sa_<random id>``),
each with its real masks padded to ``--masks`` per image (SA-1B averages about 100) by
synthetic ellipses, all as compressed RLE with random SAM scores. The same images and masks
are also written as a COCO dataset (one JSON, one image folder) for the comparison. Then:

- **index**: one ``index_tar`` task per tar on a local Dask cluster of 1 and of ``--workers``
  worker processes (fresh cache each run), alternating; time per tar (inside the task) and the
  wall-clock speed-up of more workers;
- **memory vs tars**: ``--rss-tars`` corpora of small simulated tars (``--rss-images`` images
  each, hard links of one tar under other names), indexed once; then, each in a fresh process, the
  driver's work (list the tars, plan, open the catalog, fingerprints, provenance) and a
  worker's (open the catalog, make 2 shards), each with its peak RSS (``VmHWM``) and its RSS
  after the imports both sides pay;
- **build, per core**: ``make_shard`` in this process (one worker's work, single-threaded,
  each shard from an empty decoded-item cache) over the sa1b source and the coco source of
  the same images and masks (``max_masks`` lifted so both decode the same masks), alternating
  A B A B after a warm-up, in triples/s;
- **extrapolation** to 1,000 tars x 11k images on 64 workers: index wall time and size, the
  driver's RSS (least-squares slope over the tar counts), a worker's RSS, and the build's wall
  time for ``--target-triples``.

    python benchmarks/tar_source.py                      # 8 tars x 200 images, 100 masks
    python benchmarks/tar_source.py --tars 4 --images 20 --masks 30 --repeat 3 --json out.json
    python benchmarks/tar_source.py --rss-tars 10,100,1000     # issue 20, point 3: flat RSS?
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

cv2.setNumThreads(1)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.sa1b_fixture import jpeg, photo, rle_of, sa1b_json, write_tar  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
SA1B_TARS, SA1B_IMAGES, SA1B_WORKERS = 1000, 11_000, 64
MIX = {"local_texture": 0.4, "disappearance_inpaint": 0.2, "appearance_paste": 0.2, "exchange": 0.2}


# ---------------------------------------------------------------- corpus


def base_images(limit: int) -> list[tuple[bytes, tuple[int, int], list[np.ndarray]]]:
    """Up to ``limit`` (JPEG bytes, size, instance masks): coco64, camvid, else scikit-image."""
    out: list[tuple[bytes, tuple[int, int], list[np.ndarray]]] = []
    coco = SHARED / "coco64"
    if coco.is_dir():
        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):
            api = COCO(str(coco / "annotations" / "instances.json"))
        for iid in sorted(api.getImgIds())[:limit]:
            info = api.loadImgs(iid)[0]
            anns = api.loadAnns(api.getAnnIds(imgIds=iid, iscrowd=False))
            masks = [api.annToMask(a).astype(bool) for a in anns]
            blob = (coco / "images" / info["file_name"]).read_bytes()
            out.append((blob, (info["height"], info["width"]), masks))
    camvid = SHARED / "camvid"
    if camvid.is_dir():
        for img in sorted((camvid / "images").glob("*.jpg"))[: max(0, limit - len(out))]:
            ids = cv2.imread(str(camvid / "masks" / f"{img.stem}.png"), cv2.IMREAD_UNCHANGED)
            masks = [ids == k for k in np.unique(ids) if k not in (0, 255)]
            out.append((img.read_bytes(), ids.shape[:2], masks))
    if not out:
        hw = (480, 640)
        for k in range(min(limit, 12)):
            masks = []
            for m in range(6):
                mask = np.zeros(hw, bool)
                mask[40 + 50 * m : 120 + 50 * m, 60 + 70 * m : 180 + 70 * m] = True
                masks.append(mask)
            out.append((jpeg(photo(k, hw)), hw, masks))
    return out


def padded(masks: list[np.ndarray], hw: tuple[int, int], k: int, rng) -> list[np.ndarray]:
    """``masks`` plus synthetic ellipses up to ``k`` masks (SA-1B: masks of everything)."""
    out = [m for m in masks if m.any()][:k]
    h, w = hw
    while len(out) < k:
        m = np.zeros(hw, np.uint8)
        centre = (int(rng.integers(w)), int(rng.integers(h)))
        axes = (int(rng.integers(4, max(5, w // 4))), int(rng.integers(4, max(5, h // 4))))
        cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        if m.any():
            out.append(m.astype(bool))
    return out


def write_corpus(root: Path, n_tars: int, per_tar: int, n_masks: int, seed: int) -> dict[str, Any]:
    """The tars, and the same images and masks as a COCO dataset (see the module docstring)."""
    rng = np.random.default_rng(seed)
    bases = base_images(n_tars * per_tar)
    ids = rng.choice(10**7, size=n_tars * per_tar, replace=False)
    (root / "coco" / "images").mkdir(parents=True, exist_ok=True)
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    tars, json_bytes, k = [], 0, 0
    for t in range(n_tars):
        members = []
        for _ in range(per_tar):
            blob, hw, real = bases[k % len(bases)]
            stem = f"sa_{int(ids[k])}"
            masks = padded(real, hw, n_masks, rng)
            scored = [
                (
                    k * 1000 + j,
                    m,
                    round(float(rng.uniform(0.85, 1.0)), 4),
                    round(float(rng.uniform(0.9, 1.0)), 4),
                )
                for j, m in enumerate(masks)
            ]
            doc = sa1b_json(k + 1, f"{stem}.jpg", hw, scored)
            json_bytes += len(doc)
            members += [(f"{stem}.jpg", blob), (f"{stem}.json", doc)]
            (root / "coco" / "images" / f"{stem}.jpg").write_bytes(blob)
            coco["images"].append(
                {"id": k + 1, "file_name": f"{stem}.jpg", "height": hw[0], "width": hw[1]}
            )
            for aid, m, _, _ in scored:
                coco["annotations"].append(
                    {
                        "id": aid + 1,
                        "image_id": k + 1,
                        "category_id": 1,
                        "iscrowd": 0,
                        "segmentation": rle_of(m),
                    }
                )
            k += 1
        tars.append(write_tar(root / "tars" / f"sa_{t:06d}.tar", members))
    ann = root / "coco" / "instances.json"
    ann.write_text(json.dumps(coco))
    return {
        "tars": tars,
        "ann_file": ann,
        "image_root": root / "coco" / "images",
        "json_bytes_per_image": json_bytes / max(k, 1),
        "tar_bytes": sum(t.stat().st_size for t in tars),
        "real_images": len(bases),
    }


# ---------------------------------------------------------------- index


def bench_index(corpus: dict, workers: int, repeat: int, tmp: Path) -> dict[str, Any]:
    """Index every tar on clusters of 1 and ``workers`` processes, alternating, fresh caches."""
    from distributed import Client, LocalCluster, wait

    logging.getLogger("distributed").setLevel(logging.ERROR)

    from synth.index.select import MaskFilter
    from synth.index.tarset import TarSet, index_tar, load_index

    ts = TarSet.resolve([str(t) for t in corpus["tars"]], str(tmp), MaskFilter())
    sides = sorted({1, workers})
    walls: dict[int, list[float]] = {w: [] for w in sides}
    per_tar: list[float] = []
    clusters = {
        w: LocalCluster(
            n_workers=w,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        )
        for w in sides
    }
    clients = {w: Client(c) for w, c in clusters.items()}
    try:
        for r in range(repeat + 1):  # the first round warms the workers up (imports)
            for w in sides:
                cache = str(tmp / f"cache-{w}-{r}")
                t0 = time.perf_counter()
                futs = clients[w].map(
                    index_tar,
                    list(ts.refs),
                    [cache] * len(ts.refs),
                    [ts.filters] * len(ts.refs),
                    pure=False,
                )
                wait(futs)
                wall = time.perf_counter() - t0
                res = [f.result() for f in futs]
                if r:
                    walls[w].append(wall)
                    per_tar += [x["seconds"] for x in res] if w == 1 else []
                shutil.rmtree(cache, ignore_errors=True)
    finally:
        for w in sides:
            clients[w].close()
            clusters[w].close()
    idx_path = tmp / "one"
    index_tar(ts.refs[0], str(idx_path), ts.filters)
    one = load_index(str(idx_path), ts.refs[0])
    return {
        "tars": len(ts.refs),
        "walls": {str(w): v for w, v in walls.items()},
        "per_tar_s": per_tar,
        "speedup": statistics.median(walls[1]) / statistics.median(walls[workers]),
        "index_bytes_per_tar": sum(p.stat().st_size for p in idx_path.rglob("*.idx")),
        "images_per_tar": len(one),
        "masks_per_tar": one.num_masks,
    }


# ---------------------------------------------------------------- memory


_PROBE = """
import json, sys
sys.path.insert(0, {repo!r})
def status():
    out = {{}}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out
import numpy, cv2, synth.sample, synth.build, synth.sources.sa1b, synth.index.cluster
from synth.manifest import parse_manifest
m = parse_manifest(json.loads({manifest!r}), base_dir=None)
before = status()
{work}
print(json.dumps({{"before": before, "after": status()}}))
"""

_DRIVER = """
from synth.build import _index_records
from synth.index.cluster import plan_indexes
from synth.sample import Catalog
assert plan_indexes(m) == []
catalog = Catalog.open(m)
catalog.fingerprints(m)
_index_records(m, catalog)
"""

_WORKER = """
from synth.build import make_shard
for shard in (0, 1):
    make_shard(m, shard)
"""


def _probe(manifest: dict, work: str) -> dict[str, Any]:
    code = _PROBE.format(repo=str(REPO), manifest=json.dumps(manifest), work=work)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if run.returncode:
        raise SystemExit(f"memory probe failed: {run.stderr.strip().splitlines()[-1]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def bench_memory(counts: list[int], images: int, tmp: Path) -> list[dict]:
    """Driver and worker peak RSS against the number of simulated tars.

    The simulated tars are hard links of one small tar (``images`` 120x160 photos, 8 masks
    each) under other names, so each gets its own index while the disk holds one tar. With
    ``images`` at least a shard's pool (32 here), a shard reads one or two tars whatever their
    number, so what grows with the tar count is what the driver and workers keep per tar.
    """
    from synth.index.select import MaskFilter
    from synth.index.tarset import TarSet
    from tests.sa1b_fixture import write_sa1b_corpus

    template = write_sa1b_corpus(
        tmp / "template", n_tars=1, per_tar=images, masks_per_image=8, hw=(120, 160)
    ).tars[0]
    rows = []
    for n in counts:
        folder = tmp / f"sim-{n}"
        folder.mkdir(parents=True)
        for t in range(n):
            try:
                os.link(template, folder / f"sa_{t:06d}.tar")
            except OSError:
                shutil.copyfile(template, folder / f"sa_{t:06d}.tar")
        cache = tmp / f"sim-cache-{n}"
        t0 = time.perf_counter()
        TarSet.resolve(str(folder / "*.tar"), str(cache), MaskFilter()).counts()
        index_s = time.perf_counter() - t0
        src = {
            "name": "sa1b",
            "kind": "sa1b",
            "tars": str(folder / "*.tar"),
            "cache_dir": str(cache),
        }
        man = _manifest(src, n=64, shard=32)
        driver, worker = _probe(man, _DRIVER), _probe(man, _WORKER)
        rows.append({"tars": n, "index_s_in_process": index_s, "driver": driver, "worker": worker})
        shutil.rmtree(folder)
        shutil.rmtree(cache)
    return rows


# ---------------------------------------------------------------- build


def _manifest(source: dict, n: int, shard: int) -> dict:
    return {
        "name": "tar-bench",
        "seed": 3,
        "n": n,
        "size": [256, 256],
        "shard_size": shard,
        "sources": {"images": [source], "textures": [{"name": "tex", "kind": "samples"}]},
        "mix": MIX,
    }


def bench_build(corpus: dict, masks: int, shard: int, repeat: int, tmp: Path) -> dict[str, Any]:
    """Triples/s of one worker core over the sa1b and the coco source of the same images."""
    from synth import build as b
    from synth.manifest import parse_manifest

    filters = {"min_area_frac": 0.005, "max_area_frac": 0.5, "min_side": 16}
    sides = {
        "sa1b": {
            "name": "src",
            "kind": "sa1b",
            "tars": [str(t) for t in corpus["tars"]],
            "cache_dir": str(tmp / "build-cache"),
            "max_masks": masks,
            **filters,
        },
        "coco": {
            "name": "src",
            "kind": "coco",
            "ann_file": str(corpus["ann_file"]),
            "image_root": str(corpus["image_root"]),
            "cache_dir": str(tmp / "coco-cache"),
            **filters,
        },
    }
    n = shard * (repeat + 1)
    manifests = {k: parse_manifest(_manifest(v, n, shard), base_dir=None) for k, v in sides.items()}
    times: dict[str, list[float]] = {k: [] for k in sides}
    for s in range(repeat + 1):  # shard 0 warms up both sides (imports, index, inpainter)
        for side, m in manifests.items():
            b._catalog(m).cache.clear()  # open untimed; each shard from an empty decoded cache
            t0 = time.perf_counter()
            b.make_shard(m, s)
            if s:
                times[side].append(time.perf_counter() - t0)
    b._CATALOGS.clear()
    rates = {k: [shard / t for t in v] for k, v in times.items()}
    ratios = [a / c for a, c in zip(rates["sa1b"], rates["coco"], strict=True)]
    return {"rates": rates, "ratios": ratios, "shard": shard}


# ---------------------------------------------------------------- report


def _med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3g} ({min(xs):.3g}-{max(xs):.3g})" if xs else "-"


def extrapolate(ix: dict, mem: list[dict], bb: dict, target: int) -> dict[str, float]:
    """Measured per-tar costs scaled to 1,000 tars x 11k images on 64 workers (linear)."""
    scale = SA1B_IMAGES / ix["images_per_tar"]
    tar_s = statistics.median(ix["per_tar_s"]) * scale
    out = {
        "index_s_per_tar": tar_s,
        "index_wall_h_64": -(-SA1B_TARS // SA1B_WORKERS) * tar_s / 3600,
        "index_gb_per_tar": ix["index_bytes_per_tar"] * scale / 1e9,
        "index_tb_total": ix["index_bytes_per_tar"] * scale * SA1B_TARS / 1e12,
        "build_wall_h_64": target / (statistics.median(bb["rates"]["sa1b"]) * SA1B_WORKERS) / 3600,
    }
    if len(mem) >= 2:
        xs = np.array([r["tars"] for r in mem], float)
        for role in ("driver", "worker"):
            ys = np.array([r[role]["after"]["VmHWM"] for r in mem])
            slope, icpt = np.polyfit(xs, ys, 1)
            out[f"{role}_mb_per_tar"] = float(slope)
            out[f"{role}_peak_mb_at_1000"] = float(icpt + slope * SA1B_TARS)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--tars", type=int, default=8)
    p.add_argument("--images", type=int, default=200, help="images per tar")
    p.add_argument("--masks", type=int, default=100, help="masks per image")
    p.add_argument("--workers", type=int, default=2, help="cluster size for the speed-up")
    p.add_argument("--rss-tars", default="10,100", help="simulated tar counts (comma list)")
    p.add_argument("--rss-images", type=int, default=32, help="images per simulated tar")
    p.add_argument("--shard", type=int, default=32, help="triples per timed shard")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--target-triples", type=int, default=2_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="synth-tar-bench-"))
    try:
        t0 = time.perf_counter()
        corpus = write_corpus(tmp / "corpus", args.tars, args.images, args.masks, args.seed)
        print(
            f"corpus: {args.tars} tars x {args.images} images x {args.masks} masks from "
            f"{corpus['real_images']} real photos, {corpus['tar_bytes'] / 1e6:.1f} MB, "
            f"{corpus['json_bytes_per_image'] / 1e3:.0f} kB of JSON per image "
            f"({time.perf_counter() - t0:.0f} s to write)"
        )
        ix = bench_index(corpus, args.workers, args.repeat, tmp / "index")
        mem = bench_memory([int(x) for x in args.rss_tars.split(",")], args.rss_images, tmp / "mem")
        bb = bench_build(corpus, args.masks, args.shard, args.repeat, tmp / "build")
        ext = extrapolate(ix, mem, bb, args.target_triples)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nindex ({ix['tars']} tars of {ix['images_per_tar']} images; median (min-max) of "
        f"{args.repeat})"
    )
    print(f"  seconds per tar (in the task)     {_med(ix['per_tar_s'])}")
    for w, v in ix["walls"].items():
        print(f"  wall, {w} worker(s)               {_med(v)} s")
    print(f"  speed-up 1 -> {args.workers} workers          {ix['speedup']:.2f}x")
    print(
        f"  index file per tar                {ix['index_bytes_per_tar'] / 1e3:.1f} kB "
        f"({ix['masks_per_tar']} masks)"
    )
    print("\nmemory against tars (MB; peak VmHWM, and RSS after the imports both pay)")
    print(
        f"  {'tars':>6}  {'driver peak':>11}  {'driver base':>11}  {'worker peak':>11}  "
        f"{'worker base':>11}"
    )
    for r in mem:
        print(
            f"  {r['tars']:>6}  {r['driver']['after']['VmHWM']:>11.0f}  "
            f"{r['driver']['before']['VmRSS']:>11.0f}  {r['worker']['after']['VmHWM']:>11.0f}  "
            f"{r['worker']['before']['VmRSS']:>11.0f}"
        )
    print(f"\nbuild, one core, shards of {args.shard} at 256x256 (triples/s, median (min-max))")
    for side, v in bb["rates"].items():
        print(f"  {side:<6} {_med(v)}")
    print(f"  sa1b / coco  {_med(bb['ratios'])}")
    print(
        f"\nextrapolated to {SA1B_TARS} tars x {SA1B_IMAGES} images on {SA1B_WORKERS} workers "
        "(linear in images; these images and masks, not SA-1B's 1500x2250):"
    )
    print(
        f"  index: {ext['index_s_per_tar']:.0f} s per tar, {ext['index_wall_h_64']:.2f} h wall, "
        f"{ext['index_gb_per_tar']:.3f} GB per tar, {ext['index_tb_total']:.3f} TB in all"
    )
    if "driver_peak_mb_at_1000" in ext:
        print(
            f"  driver peak {ext['driver_peak_mb_at_1000']:.0f} MB "
            f"({ext['driver_mb_per_tar'] * 1024:+.1f} kB per tar); worker peak "
            f"{ext['worker_peak_mb_at_1000']:.0f} MB ({ext['worker_mb_per_tar'] * 1024:+.1f} "
            "kB per tar)"
        )
    print(f"  build of {args.target_triples} triples: {ext['build_wall_h_64']:.2f} h")
    print(
        f"\ntar_source: index {statistics.median(ix['per_tar_s']):.2f} s/tar, "
        f"{ix['speedup']:.2f}x on {args.workers} workers; build "
        f"{statistics.median(bb['rates']['sa1b']):.1f} triples/s/core, "
        f"{statistics.median(bb['ratios']):.2f}x the coco source (median of {args.repeat})"
    )
    result = {"args": vars(args), "index": ix, "memory": mem, "build": bb, "extrapolation": ext}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
