"""Tiny SA-1B-format tars written inside the tests, from scikit-image photos and known masks.

``write_sa1b_corpus`` writes ``n_tars`` tars of ``per_tar`` ``<stem>.jpg`` + ``<stem>.json``
pairs; every mask is a rectangle (exact under any reader) encoded with
``pycocotools.mask.encode``, with varied areas and SAM scores, so filters and the per-image cap
have something to choose. It can inject each kind of bad data the source must count, not die
of. ``write_tar`` and ``sa1b_json`` are the format itself (``benchmarks/tar_source.py`` uses
them too).

Use ``from tests.sa1b_fixture import write_sa1b_corpus``.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from skimage import data

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")

#: injectable damage -> what the source must report (a fragment of the problem or error)
BAD_CASES = {
    "truncated": "cut short",
    "json_without_image": "has no image",
    "image_without_json": "has no JSON",
    "rle_size": "RLE size [10, 10] does not match the image's",
    "corrupt_jpeg": "cannot decode image",
}


@dataclass
class Sa1bFixture:
    """What ``write_sa1b_corpus`` wrote and what a correct reader must return.

    Attributes:
        tars: the tar files, in URL order.
        stems: the usable images' stems per tar, in index order (sorted).
        masks: stem -> [(annotation id, bool mask, predicted_iou, stability_score)].
        images: stem -> the RGB pixels its JPEG decodes to.
        hw: the images' (height, width).
        bad: injected case -> the stem or tar it hit.
    """

    tars: list[Path]
    stems: list[list[str]] = field(default_factory=list)
    masks: dict[str, list[tuple[int, np.ndarray, float, float]]] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    hw: tuple[int, int] = (60, 80)
    bad: dict[str, str] = field(default_factory=dict)


def rle_of(mask: np.ndarray) -> dict[str, object]:
    """The compressed COCO RLE of a bool mask, as SA-1B's JSON holds it."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def sa1b_json(
    image_id: int,
    file_name: str,
    hw: tuple[int, int],
    masks: Sequence[tuple[int, np.ndarray, float, float]],
) -> bytes:
    """One image's SA-1B JSON: ``image`` and one ``annotations`` entry per mask."""
    anns = []
    for aid, mask, iou, stab in masks:
        rle = rle_of(mask)
        x, y, w, h = (float(v) for v in mask_utils.toBbox(rle | {"counts": rle["counts"].encode()}))
        anns.append(
            {
                "id": aid,
                "segmentation": rle,
                "bbox": [x, y, w, h],
                "area": int(mask.sum()),
                "predicted_iou": iou,
                "stability_score": stab,
                "crop_box": [0.0, 0.0, float(hw[1]), float(hw[0])],
                "point_coords": [[x + w / 2, y + h / 2]],
            }
        )
    doc = {
        "image": {"image_id": image_id, "width": hw[1], "height": hw[0], "file_name": file_name},
        "annotations": anns,
    }
    return json.dumps(doc).encode()


def write_tar(path: Path, members: Iterable[tuple[str, bytes]]) -> Path:
    """A plain (uncompressed) tar holding ``members`` (name, bytes), in the given order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, blob in members:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(blob))
    return path


def photo(k: int, hw: tuple[int, int]) -> np.ndarray:
    """Photo ``k`` (cycling over ``PHOTOS``) as RGB uint8 at ``hw``, mirrored on odd laps."""
    rgb = getattr(data, PHOTOS[k % len(PHOTOS)])()
    if rgb.ndim == 2:
        rgb = np.stack([rgb] * 3, -1)
    rgb = cv2.resize(rgb[..., :3], hw[::-1], interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb[:, ::-1] if (k // len(PHOTOS)) % 2 else rgb)


def jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
    )
    assert ok
    return buf.tobytes()


def rect_masks(k: int, hw: tuple[int, int], n: int) -> list[tuple[int, np.ndarray, float, float]]:
    """``n`` rectangles of growing size and varied scores (ids ``k * 100 + m``)."""
    h, w = hw
    out = []
    for m in range(n):
        mask = np.zeros(hw, bool)
        y0, x0 = (3 * m + k) % (h // 3), (5 * m + 2 * k) % (w // 3)
        mask[y0 : y0 + 6 + 5 * m, x0 : x0 + 8 + 6 * m] = True
        iou = round(0.70 + 0.05 * ((m + k) % 6), 3)
        stab = round(0.99 - 0.04 * ((2 * m + k) % 5), 3)
        out.append((k * 100 + m, mask, iou, stab))
    return out


def write_sa1b_corpus(
    root: Path,
    *,
    n_tars: int = 2,
    per_tar: int = 3,
    masks_per_image: int = 5,
    hw: tuple[int, int] = (60, 80),
    bad: Iterable[str] = (),
) -> Sa1bFixture:
    """Write ``n_tars`` tars ``sa_00000K.tar`` under ``root`` (see the module docstring)."""
    bad = set(bad)
    unknown = bad - set(BAD_CASES)
    assert not unknown, unknown
    fx = Sa1bFixture(tars=[], hw=hw)
    k = 0
    for t in range(n_tars):
        members, stems = [], []
        for _ in range(per_tar):
            stem = f"sa_{k + 1}"
            rgb = photo(k, hw)
            masks = rect_masks(k, hw, masks_per_image)
            blob = jpeg(rgb)
            doc_masks = masks
            if t == 0 and k == 0 and "rle_size" in bad:
                doc_masks = list(masks)
                small = np.zeros((10, 10), bool)
                small[2:5, 2:5] = True
                doc_masks[0] = (masks[0][0], small, masks[0][2], masks[0][3])
                masks = masks[1:]
                fx.bad["rle_size"] = stem
            if t == 0 and k == 1 and "corrupt_jpeg" in bad:
                blob = b"\xff\xd8\xff\xe0 not a jpeg at all" + bytes(64)
                fx.bad["corrupt_jpeg"] = stem
            members.append((f"{stem}.jpg", blob))
            members.append((f"{stem}.json", sa1b_json(k + 1, f"{stem}.jpg", hw, doc_masks)))
            fx.images[stem] = (
                cv2.cvtColor(
                    cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
                )
                if stem != fx.bad.get("corrupt_jpeg")
                else rgb
            )
            fx.masks[stem] = masks
            stems.append(stem)
            k += 1
        if t == 0 and "json_without_image" in bad:
            members.append(("sa_orphan.json", sa1b_json(999, "sa_orphan.jpg", hw, [])))
            fx.bad["json_without_image"] = "sa_orphan"
        if t == 0 and "image_without_json" in bad:
            members.append(("sa_lonely.jpg", jpeg(photo(0, hw))))
            fx.bad["image_without_json"] = "sa_lonely"
        path = write_tar(root / f"sa_{t:06d}.tar", members)
        if t == n_tars - 1 and "truncated" in bad:
            raw = path.read_bytes()
            last_jpg = raw.rfind(b"\xff\xd8")  # inside the last image's bytes
            path.write_bytes(raw[: last_jpg + 20])
            fx.bad["truncated"] = path.name
            stems = stems[:-1]  # its pair is incomplete: JPEG cut, JSON after it lost
        fx.tars.append(path)
        fx.stems.append(sorted(stems))
    return fx
