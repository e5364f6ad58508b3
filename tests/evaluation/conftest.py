"""Fixture trees in the MVTec AD, VisA and folder layouts, and a deterministic fake model.

Images are small (40x48) so a whole evaluation takes a fraction of a second. Each category has
its own smooth background; training images differ by brightness (so nearest-prompt retrieval
has something to find) and anomalies are coloured squares recorded in the masks.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

H, W = 40, 48


def background(category: str, brightness: float) -> np.ndarray:
    """A smooth RGB pattern that depends on the category name, scaled by ``brightness``."""
    k = sum(map(ord, category)) % 7 + 1
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    base = 110 + 40 * np.sin(x / (3 + k)) + 30 * np.cos(y / (2 + k))
    img = np.stack([base, base * 0.9 + 10, base * 0.8 + 20], axis=-1) * brightness
    return np.clip(img, 0, 255).astype(np.uint8)


def with_defect(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paste a coloured square; return the image and its bool mask."""
    img = img.copy()
    s = int(rng.integers(6, 12))
    y0, x0 = int(rng.integers(0, H - s)), int(rng.integers(0, W - s))
    img[y0 : y0 + s, x0 : x0 + s] = rng.integers(0, 256, 3, dtype=np.uint8)
    mask = np.zeros((H, W), dtype=bool)
    mask[y0 : y0 + s, x0 : x0 + s] = True
    return img, mask


def write_rgb(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img[..., ::-1].copy())
    return path


def write_mask(path: Path, mask: np.ndarray, value: int = 255) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), mask.astype(np.uint8) * value)
    return path


def _samples(category: str, n_train: int, n_good: int, n_bad: int):
    rng = np.random.default_rng(sum(map(ord, category)))
    train = [background(category, 0.7 + 0.1 * i) for i in range(n_train)]
    good = [background(category, float(rng.uniform(0.7, 1.0))) for _ in range(n_good)]
    bad = [
        with_defect(background(category, float(rng.uniform(0.7, 1.0))), rng) for _ in range(n_bad)
    ]
    return train, good, bad


CATEGORIES = ("bottle", "cable")


def make_mvtec(root: Path, categories=CATEGORIES, n_train=4, n_good=3, n_bad=3) -> Path:
    """``<cat>/train/good``, ``<cat>/test/{good,crack}``, ``<cat>/ground_truth/crack``."""
    for cat in categories:
        train, good, bad = _samples(cat, n_train, n_good, n_bad)
        for i, img in enumerate(train):
            write_rgb(root / cat / "train" / "good" / f"{i:03d}.png", img)
        for i, img in enumerate(good):
            write_rgb(root / cat / "test" / "good" / f"{i:03d}.png", img)
        for i, (img, mask) in enumerate(bad):
            write_rgb(root / cat / "test" / "crack" / f"{i:03d}.png", img)
            write_mask(root / cat / "ground_truth" / "crack" / f"{i:03d}_mask.png", mask)
    return root


def make_visa(root: Path, categories=CATEGORIES, n_train=4, n_good=3, n_bad=3) -> Path:
    """VisA: JPEG images, masks numbered 1 (not 255), ``split_csv/1cls.csv``."""
    rows = []
    for cat in categories:
        train, good, bad = _samples(cat, n_train, n_good, n_bad)
        imgs = Path(cat) / "Data" / "Images"
        for i, img in enumerate(train):
            write_rgb(root / imgs / "Normal" / f"{i:04d}.JPG", img)
            rows.append([cat, "train", "normal", f"{imgs}/Normal/{i:04d}.JPG", ""])
        for i, img in enumerate(good):
            j = n_train + i
            write_rgb(root / imgs / "Normal" / f"{j:04d}.JPG", img)
            rows.append([cat, "test", "normal", f"{imgs}/Normal/{j:04d}.JPG", ""])
        for i, (img, mask) in enumerate(bad):
            write_rgb(root / imgs / "Anomaly" / f"{i:03d}.JPG", img)
            m = Path(cat) / "Data" / "Masks" / "Anomaly" / f"{i:03d}.png"
            write_mask(root / m, mask, value=1)
            rows.append([cat, "test", "anomaly", f"{imgs}/Anomaly/{i:03d}.JPG", str(m)])
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    with open(root / "split_csv" / "1cls.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["object", "split", "label", "image", "mask"])
        w.writerows(rows)
    return root


def make_folder(root: Path, categories=CATEGORIES, n_train=4, n_good=3, n_bad=3) -> Path:
    """``<cat>/normal``, ``<cat>/test``, ``<cat>/masks/<test stem>.png``."""
    for cat in categories:
        train, good, bad = _samples(cat, n_train, n_good, n_bad)
        for i, img in enumerate(train):
            write_rgb(root / cat / "normal" / f"n{i}.png", img)
        for i, img in enumerate(good):
            write_rgb(root / cat / "test" / f"good{i}.png", img)
        for i, (img, mask) in enumerate(bad):
            write_rgb(root / cat / "test" / f"bad{i}.png", img)
            write_mask(root / cat / "masks" / f"bad{i}.png", mask)
    return root


MAKERS: dict[str, Callable[..., Path]] = {
    "mvtec": make_mvtec,
    "visa": make_visa,
    "folder": make_folder,
}


class FakePredictor:
    """Deterministic stand-in for the model: blurred absolute difference of prompt and query.

    ``embed`` is the 4x4 grey thumbnail minus 100, so nearest retrieval matches brightness.
    """

    def __init__(self, size: tuple[int, int] = (32, 32)) -> None:
        self.size = size
        self.predict_calls = 0

    def _blur(self, images: np.ndarray) -> np.ndarray:
        return np.stack([cv2.GaussianBlur(im, (3, 3), 0) for im in images]).astype(np.float32)

    def predict(self, prompts: np.ndarray, queries: np.ndarray) -> np.ndarray:
        assert prompts.dtype == np.uint8 and queries.dtype == np.uint8
        assert prompts.shape == queries.shape and prompts.shape[1:] == (*self.size, 3)
        self.predict_calls += 1
        return (np.abs(self._blur(queries) - self._blur(prompts)).mean(axis=-1) / 255).astype(
            np.float32
        )

    def embed(self, images: np.ndarray) -> np.ndarray:
        assert images.dtype == np.uint8 and images.shape[1:] == (*self.size, 3)
        grey = images.mean(axis=-1).astype(np.float32) - 100.0  # offset: cosine sees brightness
        return np.stack([cv2.resize(g, (4, 4), interpolation=cv2.INTER_AREA).ravel() for g in grey])


@pytest.fixture
def fake_predictor() -> FakePredictor:
    return FakePredictor()


@pytest.fixture(params=sorted(MAKERS))
def any_tree(request, tmp_path) -> tuple[str, Path]:
    """(layout name, root) for each of the three layouts."""
    kind = request.param
    return kind, MAKERS[kind](tmp_path / kind)


@pytest.fixture
def mvtec_tree(tmp_path) -> Path:
    return make_mvtec(tmp_path / "mvtec")


@pytest.fixture
def visa_tree(tmp_path) -> Path:
    return make_visa(tmp_path / "visa")


@pytest.fixture
def folder_tree(tmp_path) -> Path:
    return make_folder(tmp_path / "folder")
