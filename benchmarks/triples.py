"""Triples the codec and loader benchmarks share: toy textures, the demo and the COCO recipe.

``coco`` is the MetaUAS recipe (``manifests/metauas-coco2017.yaml``) on the 64 COCO photos and
textures of ``../shared/data`` (None when that folder is absent); every set is made in this
process by the builder's own ``make_shard`` (``toy`` by ``tests/train/store_fixture.py``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
Triple = list[np.ndarray]


def store_fixture() -> Any:
    """``tests/train/store_fixture.py`` as a module (the toy triples and their store writer)."""
    spec = importlib.util.spec_from_file_location(
        "store_fixture", ROOT / "tests" / "train" / "store_fixture.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def toy_triples(n: int, size: int) -> list[Triple]:
    mod = store_fixture()
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
        images, masks = arrays["images"], arrays["mask"]
        out += [
            [np.ascontiguousarray(images[j, 0]), np.ascontiguousarray(images[j, 1]), masks[j]]
            for j in range(len(masks))
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


DATASETS = ("toy", "demo", "coco")


def make(dataset: str, n: int, size: int) -> list[Triple] | None:
    """The first ``n`` triples of ``dataset`` (``DATASETS``); None when its data is absent."""
    if dataset == "toy":
        return toy_triples(n, size)
    raw = demo_raw() if dataset == "demo" else coco_raw()
    return None if raw is None else manifest_triples(raw, n, size)


def stored_chunks(triple: Triple, layout: str) -> list[np.ndarray]:
    """The arrays a store encodes for one triple, in storage order.

    ``separate``: prompt, query and mask (format 2); ``rows``: prompt and query row-interleaved
    as (y, role, x, channel), what format 3's ``transpose`` codec stores, then the mask;
    ``roles``: prompt then query (role-major), then the mask.
    """
    prompt, query, mask = triple
    if layout == "separate":
        return [prompt, query, mask]
    if layout == "rows":
        return [np.ascontiguousarray(np.stack([prompt, query], axis=1)), mask]
    return [np.stack([prompt, query]), mask]
