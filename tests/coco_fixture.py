"""A small COCO-format dataset written from scikit-image photos, with known masks.

Covers every segmentation encoding COCO uses (single and multi-part polygons, compressed RLE,
uncompressed RLE, crowd regions as RLE and as polygon) and can inject each kind of malformed
annotation or a corrupt / missing image. The expected masks are computed independently of
pycocotools (RLEs by hand, polygons by pixel-centre inclusion); rectilinear polygons and
RLEs are exact, the one triangle's edge pixels may differ, so tests compare it loosely.

Use ``from tests.coco_fixture import write_coco_fixture``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from skimage import data
from skimage.draw import polygon2mask

CATEGORIES = {1: "person", 2: "cup", 3: "camera"}

# case -> (annotation id, text the problem message must contain)
MALFORMED_CASES: dict[str, tuple[int, str]] = {
    "short_polygon": (101, "polygon has 4 coordinates (need >= 6 and even)"),
    "odd_polygon": (102, "polygon has 7 coordinates (need >= 6 and even)"),
    "empty_polygon": (103, "polygon list is empty"),
    "self_intersecting": (104, "polygon self-intersects near (25.0, 25.0)"),
    "unknown_image": (105, "image_id 999 is not in images"),
    "unknown_category": (106, "category_id 77 is not in categories"),
    "rle_size": (107, "RLE size [10, 10] does not match image astronaut.jpg size [96, 128]"),
    "rle_sum": (108, "uncompressed RLE counts sum to 100 (need 96*128 = 12288)"),
    "second_part_short": (109, "polygon 2 of 2 has 4 coordinates"),
    "nan_coordinates": (110, "polygon has non-numeric or non-finite coordinates"),
    "duplicate_id": (111, "id is used by more than one annotation"),
}


@dataclass
class CocoFixture:
    """What ``write_coco_fixture`` wrote and what a correct reader must return.

    Attributes:
        root: the fixture folder.
        ann_file: the instances JSON.
        image_root: the folder holding the image files.
        expected: non-crowd annotation id -> exact expected bool mask.
        approximate: annotation ids whose expected mask is a drawn triangle (compare loosely).
        ignore: image file name -> expected union of crowd regions.
        categories: annotation id -> category id (non-crowd annotations).
        image_of: annotation id -> image file name.
        images: file name -> (height, width).
        malformed: injected case -> (annotation id, expected message fragment).
        broken_images: file names whose ``load`` must fail (corrupt or missing file).
    """

    root: Path
    ann_file: Path
    image_root: Path
    expected: dict[int, np.ndarray] = field(default_factory=dict)
    approximate: set[int] = field(default_factory=set)
    ignore: dict[str, np.ndarray] = field(default_factory=dict)
    categories: dict[int, int] = field(default_factory=dict)
    image_of: dict[int, str] = field(default_factory=dict)
    images: dict[str, tuple[int, int]] = field(default_factory=dict)
    malformed: dict[str, tuple[int, str]] = field(default_factory=dict)
    broken_images: list[str] = field(default_factory=list)

    def anns_of(self, file_name: str) -> list[int]:
        """Ids of the valid non-crowd annotations of one image, sorted."""
        return sorted(a for a, f in self.image_of.items() if f == file_name)


def rect(x0: int, y0: int, x1: int, y1: int) -> list[float]:
    """A rectangle polygon covering pixel columns x0..x1-1 and rows y0..y1-1."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def uncompressed_rle(mask: np.ndarray) -> dict[str, object]:
    """COCO uncompressed RLE (column-major runs, starting with a background run)."""
    flat = np.asarray(mask, bool).T.ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0, *runs]
    return {"size": list(mask.shape), "counts": runs}


def compressed_rle(mask: np.ndarray) -> dict[str, object]:
    """COCO compressed RLE, as it appears in JSON (counts as a string)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(mask.shape), "counts": rle["counts"].decode("ascii")}


def _rect_mask(shape: tuple[int, int], x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def _photo(name: str, hw: tuple[int, int]) -> np.ndarray:
    img = getattr(data, name)()
    return cv2.resize(img, hw[::-1], interpolation=cv2.INTER_AREA)


def write_coco_fixture(
    root: str | Path,
    *,
    malformed: Iterable[str] = (),
    corrupt_image: bool = False,
    missing_image: bool = False,
) -> CocoFixture:
    """Write images and ``annotations/instances.json`` under ``root``.

    Images (sorted by file name): ``astronaut.jpg`` 96x128 RGB JPEG, ``camera.png`` 64x64
    single-channel PNG, ``coffee.png`` 80x120 RGB PNG; optionally ``corrupt.jpg`` (garbage
    bytes) and ``missing.jpg`` (listed but not written).

    Args:
        root: folder to write into (created).
        malformed: names from ``MALFORMED_CASES`` to inject as extra annotations.
        corrupt_image: add an image entry whose file is not an image.
        missing_image: add an image entry whose file does not exist.

    Returns:
        The paths and the expected decoding.
    """
    root = Path(root)
    image_root = root / "images"
    image_root.mkdir(parents=True, exist_ok=True)
    fx = CocoFixture(
        root=root, ann_file=root / "annotations" / "instances.json", image_root=image_root
    )
    images: list[dict[str, object]] = []
    anns: list[dict[str, object]] = []

    def add_image(iid: int, file_name: str, pixels: np.ndarray | None, hw: tuple[int, int]) -> None:
        images.append({"id": iid, "file_name": file_name, "height": hw[0], "width": hw[1]})
        fx.images[file_name] = hw
        if pixels is not None:
            bgr = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(image_root / file_name), bgr)

    def add_ann(
        aid: int,
        iid: int,
        file_name: str,
        cat: int,
        seg: object,
        mask: np.ndarray | None,
        *,
        crowd: bool = False,
    ) -> None:
        anns.append(
            {
                "id": aid,
                "image_id": iid,
                "category_id": cat,
                "segmentation": seg,
                "iscrowd": int(crowd),
                "area": 0.0,
                "bbox": [0, 0, 0, 0],
            }
        )
        if mask is None:
            return
        if crowd:
            prev = fx.ignore.get(file_name, np.zeros_like(mask))
            fx.ignore[file_name] = prev | mask
        else:
            fx.expected[aid] = mask
            fx.categories[aid] = cat
            fx.image_of[aid] = file_name

    # astronaut.jpg (id 10): 96x128, stored in reverse file-name order in the JSON on purpose.
    hw = (96, 128)
    add_image(10, "astronaut.jpg", _photo("astronaut", hw), hw)
    add_ann(1, 10, "astronaut.jpg", 1, [rect(10, 10, 40, 30)], _rect_mask(hw, 10, 10, 40, 30))
    triangle = [60.0, 10.0, 90.0, 10.0, 75.0, 40.0]
    # Pixel (r, c) is inside when its centre (c + 0.5, r + 0.5) is: shift the vertices by -0.5.
    tri_rc = np.array(triangle).reshape(-1, 2)[:, ::-1] - 0.5
    multi = _rect_mask(hw, 100, 50, 120, 60) | polygon2mask(hw, tri_rc)
    add_ann(2, 10, "astronaut.jpg", 2, [triangle, rect(100, 50, 120, 60)], multi)
    fx.approximate.add(2)
    yy, xx = np.mgrid[: hw[0], : hw[1]]
    disk = (yy - 60) ** 2 + (xx - 30) ** 2 <= 12**2
    add_ann(3, 10, "astronaut.jpg", 1, compressed_rle(disk), disk)
    crowd = _rect_mask(hw, 70, 70, 128, 96)
    add_ann(4, 10, "astronaut.jpg", 1, uncompressed_rle(crowd), crowd, crowd=True)

    # coffee.png (id 20): 80x120.
    hw = (80, 120)
    add_image(20, "coffee.png", _photo("coffee", hw), hw)
    yy, xx = np.mgrid[: hw[0], : hw[1]]
    ellipse = ((yy - 40) / 20.0) ** 2 + ((xx - 60) / 30.0) ** 2 <= 1
    add_ann(5, 20, "coffee.png", 2, uncompressed_rle(ellipse), ellipse)
    add_ann(6, 20, "coffee.png", 1, [rect(2, 2, 6, 6)], _rect_mask(hw, 2, 2, 6, 6))
    ell = [100, 60, 118, 60, 118, 78, 110, 78, 110, 70, 100, 70]
    l_shape = _rect_mask(hw, 100, 60, 118, 70) | _rect_mask(hw, 110, 70, 118, 78)
    add_ann(7, 20, "coffee.png", 1, [ell], l_shape, crowd=True)

    # camera.png (id 30): 64x64 single-channel PNG.
    hw = (64, 64)
    add_image(30, "camera.png", _photo("camera", hw), hw)
    add_ann(8, 30, "camera.png", 3, [rect(0, 0, 64, 40)], _rect_mask(hw, 0, 0, 64, 40))
    add_ann(9, 30, "camera.png", 3, [rect(50, 42, 52, 62)], _rect_mask(hw, 50, 42, 52, 62))

    if corrupt_image:
        add_image(40, "corrupt.jpg", None, (32, 32))
        (image_root / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
        fx.broken_images.append("corrupt.jpg")
    if missing_image:
        add_image(50, "missing.jpg", None, (32, 32))
        fx.broken_images.append("missing.jpg")

    bad_segs: dict[str, tuple[int, int, object]] = {
        "short_polygon": (10, 1, [[10, 10, 20, 10]]),
        "odd_polygon": (10, 1, [[10, 10, 20, 10, 20, 20, 10]]),
        "empty_polygon": (10, 1, []),
        "self_intersecting": (10, 1, [[10, 10, 40, 40, 40, 10, 10, 40]]),
        "unknown_image": (999, 1, [rect(0, 0, 5, 5)]),
        "unknown_category": (10, 77, [rect(0, 0, 5, 5)]),
        "rle_size": (10, 1, uncompressed_rle(np.ones((10, 10), bool))),
        "rle_sum": (10, 1, {"size": [96, 128], "counts": [50, 50]}),
        "second_part_short": (10, 1, [rect(0, 0, 5, 5), [1, 1, 2, 2]]),
        "nan_coordinates": (10, 1, [[10, 10, float("nan"), 10, 20, 20]]),
    }
    for case in malformed:
        if case not in MALFORMED_CASES:
            raise ValueError(f"unknown malformed case {case!r}; use {sorted(MALFORMED_CASES)}")
        aid = MALFORMED_CASES[case][0]
        fx.malformed[case] = MALFORMED_CASES[case]
        if case == "duplicate_id":  # two copies of one valid annotation: one is kept
            hw = fx.images["astronaut.jpg"]
            for _ in range(2):
                add_ann(aid, 10, "astronaut.jpg", 1, [rect(0, 0, 5, 5)], _rect_mask(hw, 0, 0, 5, 5))
            continue
        iid, cat, seg = bad_segs[case]
        add_ann(aid, iid, "astronaut.jpg", cat, seg, None)

    fx.ann_file.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "info": {"description": "synth test fixture"},
        "images": images[::-1],
        "annotations": anns[::-1],
        "categories": [
            {"id": k, "name": v, "supercategory": "thing"} for k, v in CATEGORIES.items()
        ],
    }
    fx.ann_file.write_text(json.dumps(doc))  # NaN is written as the bare token NaN
    return fx
