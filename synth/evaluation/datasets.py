"""Readers for anomaly-detection benchmarks: MVTec AD, VisA and a plain folder layout.

Every reader returns, per category, the normal training images (the pool prompts are drawn
from) and the test items (image, mask or None, label, defect type), sorted by path so that a
prompt seed picks the same image on every machine. Readers only list files and read image
headers (to catch a mask whose size differs from its image before any compute is spent);
pixels are loaded by :func:`load_image` / :func:`load_mask` when the protocol needs them.

Layouts (``ROOT`` is the ``--data`` argument):

``mvtec``
    ``ROOT/<category>/train/good/*.png`` (prompt pool), ``ROOT/<category>/test/<defect>/*.png``
    (``good`` = normal) and ``ROOT/<category>/ground_truth/<defect>/<name>_mask.png``.
``visa``
    ``ROOT/split_csv/1cls.csv`` with columns ``object,split,label,image,mask``; ``split`` is
    ``train`` or ``test``, ``label`` is ``normal`` or ``anomaly``, ``image`` and ``mask`` are
    paths relative to ``ROOT``. VisA masks number their defects 1, 2, ...; any non-zero pixel
    is anomalous.
``folder``
    ``ROOT/<category>/normal/*`` (prompt pool), ``ROOT/<category>/test/*`` and
    ``ROOT/<category>/masks/<test image stem>.png``. A test image with a mask is anomalous,
    one without a mask is normal. Images are ``.png``, ``.jpg``, ``.jpeg``, ``.bmp``,
    ``.tif`` or ``.tiff``.

In all layouts a mask is binarised as ``pixel > 0`` and must have its image's size.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from synth.errors import ConfigError, SourceError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DATASETS = ("mvtec", "visa", "folder")
VISA_COLUMNS = ("object", "split", "label", "image", "mask")


@dataclass(frozen=True)
class TestItem:
    """One test image: ``label`` 1 = anomalous; ``mask`` None means an all-normal image."""

    __test__ = False  # not a pytest class despite its name

    image: Path
    mask: Path | None
    label: int
    defect: str


@dataclass(frozen=True)
class Category:
    """A benchmark category: normal training images (prompt pool) and test items."""

    name: str
    train: tuple[Path, ...]
    test: tuple[TestItem, ...]


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _check_root(root: Path, kind: str, hint: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"{root}: not a directory (--data must be the {kind} root, {hint})")
    return root


def _pick(names: Sequence[str], wanted: Sequence[str] | None, where: Path) -> list[str]:
    """The requested categories in the order given (all, sorted, by default)."""
    if wanted is None:
        return sorted(names)
    missing = [c for c in wanted if c not in names]
    if missing:
        raise ConfigError(
            f"--categories: {', '.join(missing)} not in {where}; "
            f"available: {', '.join(sorted(names))}"
        )
    return list(wanted)


def _check_category(cat: Category, where: Path) -> Category:
    """Fail early on an empty category or a mask whose size differs from its image's."""
    if not cat.train:
        raise SourceError(f"{where}: category {cat.name!r} has no normal training image")
    if not cat.test:
        raise SourceError(f"{where}: category {cat.name!r} has no test image")
    for item in cat.test:
        check_mask_size(item)
    return cat


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file from its header only."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, ValueError) as e:
        raise SourceError(f"{path}: cannot read image header ({e})") from e
    return h, w


def check_mask_size(item: TestItem) -> None:
    """Raise a one-line SourceError naming the mask when its size differs from its image's."""
    if item.mask is None:
        return
    hi, hm = image_size(item.image), image_size(item.mask)
    if hi != hm:
        raise SourceError(
            f"{item.mask}: mask is {hm[1]}x{hm[0]} but its image {item.image.name} is "
            f"{hi[1]}x{hi[0]} (WxH); masks must match their images"
        )


def read_mvtec(root: Path | str, categories: Sequence[str] | None = None) -> list[Category]:
    """Read the MVTec AD layout (module docstring); categories sorted by name by default."""
    root = _check_root(Path(root), "MVTec AD", "holding <category>/train/good")
    names = [p.name for p in root.iterdir() if (p / "train" / "good").is_dir()]
    if not names:
        raise SourceError(f"{root}: no MVTec AD category here (expected <category>/train/good)")
    return [_mvtec_category(root / name) for name in _pick(names, categories, root)]


def _mvtec_category(d: Path) -> Category:
    test_dir = d / "test"
    if not test_dir.is_dir():
        raise SourceError(f"{test_dir}: missing (the MVTec layout needs <category>/test/<defect>)")
    items = []
    for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        defect = defect_dir.name
        for img in _images_in(defect_dir):
            if defect == "good":
                items.append(TestItem(img, None, 0, defect))
                continue
            mask = d / "ground_truth" / defect / f"{img.stem}_mask.png"
            if not mask.is_file():
                raise SourceError(f"{mask}: missing mask for anomalous test image {img}")
            items.append(TestItem(img, mask, 1, defect))
    cat = Category(d.name, tuple(_images_in(d / "train" / "good")), tuple(items))
    return _check_category(cat, d)


def read_visa(root: Path | str, categories: Sequence[str] | None = None) -> list[Category]:
    """Read the VisA layout through ``split_csv/1cls.csv`` (module docstring)."""
    root = _check_root(Path(root), "VisA", "holding split_csv/1cls.csv")
    csv_path = root / "split_csv" / "1cls.csv"
    if not csv_path.is_file():
        raise SourceError(f"{csv_path}: not found; is {root} the VisA root?")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in VISA_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SourceError(f"{csv_path}: missing column(s) {', '.join(missing)}")
        rows = [
            (line, {k: (v or "").strip() for k, v in row.items() if k is not None})
            for line, row in enumerate(reader, start=2)
        ]
    names = sorted({row["object"] for _, row in rows})
    if not names:
        raise SourceError(f"{csv_path}: no rows")
    wanted = set(_pick(names, categories, csv_path))
    train: dict[str, list[Path]] = {n: [] for n in wanted}
    test: dict[str, list[TestItem]] = {n: [] for n in wanted}
    for line, row in rows:
        if row["object"] not in wanted:
            continue
        split, label = row["split"], row["label"]
        if label not in ("normal", "anomaly") or split not in ("train", "test"):
            raise SourceError(
                f"{csv_path}:{line}: split must be train|test and label normal|anomaly, "
                f"got {split!r}, {label!r}"
            )
        image = root / row["image"]
        if not image.is_file():
            raise SourceError(f"{image}: listed in {csv_path}:{line} but missing")
        if split == "train":
            if label == "normal":
                train[row["object"]].append(image)
            continue
        mask = None
        if label == "anomaly":
            mask = root / row["mask"] if row["mask"] else None
            if mask is None or not mask.is_file():
                raise SourceError(
                    f"{mask or csv_path}: missing mask for anomalous test image {image}"
                )
        test[row["object"]].append(TestItem(image, mask, int(mask is not None), label))
    cats = []
    for name in _pick(names, categories, csv_path):
        items = tuple(sorted(test[name], key=lambda t: t.image))
        cats.append(_check_category(Category(name, tuple(sorted(train[name])), items), csv_path))
    return cats


def read_folder(root: Path | str, categories: Sequence[str] | None = None) -> list[Category]:
    """Read the folder layout ``<category>/{normal,test,masks}`` (module docstring)."""
    root = _check_root(Path(root), "folder-layout", "holding <category>/normal and /test")
    names = [p.name for p in root.iterdir() if (p / "normal").is_dir() and (p / "test").is_dir()]
    if not names:
        raise SourceError(
            f"{root}: no category here (expected <category>/normal and <category>/test)"
        )
    return [_folder_category(root / name) for name in _pick(names, categories, root)]


def _folder_category(d: Path) -> Category:
    masks = {p.stem: p for p in _images_in(d / "masks")} if (d / "masks").is_dir() else {}
    items = []
    for img in _images_in(d / "test"):
        mask = masks.pop(img.stem, None)
        defect = "good" if mask is None else "anomaly"
        items.append(TestItem(img, mask, int(mask is not None), defect))
    if masks:
        orphan = sorted(masks.values())[0]
        raise SourceError(
            f"{orphan}: mask without a test image named {orphan.stem}.* in {d / 'test'}"
        )
    return _check_category(Category(d.name, tuple(_images_in(d / "normal")), tuple(items)), d)


_READERS = {"mvtec": read_mvtec, "visa": read_visa, "folder": read_folder}


def read_dataset(
    kind: str, root: Path | str, categories: Sequence[str] | None = None
) -> list[Category]:
    """Read a benchmark by layout name (``mvtec``, ``visa`` or ``folder``)."""
    if kind not in _READERS:
        raise ConfigError(f"--dataset must be one of {', '.join(DATASETS)}, got {kind!r}")
    return _READERS[kind](root, categories)


def load_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Read an image as uint8 RGB (H, W, 3) resized to ``size`` (H, W) with INTER_AREA."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SourceError(f"{path}: cannot be decoded as an image")
    h, w = size
    if bgr.shape[:2] != (h, w):
        bgr = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_mask(item: TestItem, size: tuple[int, int], resize: str = "nearest") -> np.ndarray:
    """Read an item's mask as bool (H, W) at ``size``; all False for a normal image.

    Args:
        item: the test item (its image is used only for error messages).
        size: (H, W) of the evaluation.
        resize: ``"nearest"`` (a pixel keeps its label) or ``"bilinear_any"`` (bilinear, then
            any value > 0 — what the MetaUAS code does; it grows masks by about a pixel).
    """
    h, w = size
    if item.mask is None:
        return np.zeros((h, w), dtype=bool)
    try:
        with Image.open(item.mask) as im:
            # palette masks keep their indices; others become 8-bit luminance
            arr = np.asarray(im if im.mode in ("L", "P", "1", "I", "I;16") else im.convert("L"))
    except (OSError, ValueError) as e:
        raise SourceError(f"{item.mask}: cannot read mask ({e})") from e
    binary = (arr > 0).astype(np.uint8)
    if not binary.any():
        raise SourceError(
            f"{item.mask}: mask of anomalous image {item.image.name} is empty; "
            "delete it to mark the image normal"
        )
    if binary.shape != (h, w):
        if resize == "nearest":
            binary = cv2.resize(binary, (w, h), interpolation=cv2.INTER_NEAREST)
        elif resize == "bilinear_any":
            binary = cv2.resize(binary.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        else:
            raise ValueError(f"mask resize must be 'nearest' or 'bilinear_any', got {resize!r}")
    return binary > 0
