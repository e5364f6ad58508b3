"""``synth predict``: heat maps and image scores for one (prompt, query) pair or two folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from synth.errors import SynthError
from synth.train.predictor import ModelPredictor

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Prediction:
    """One scored pair: the image score is the map's maximum (paper protocol)."""

    prompt: str
    query: str
    heatmap: str
    score: float


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SynthError(f"{path}: cannot read this image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def heatmap_image(prob: np.ndarray) -> np.ndarray:
    """BGR colour map (jet) of a probability map in [0, 1], for writing with OpenCV."""
    return cv2.applyColorMap(np.clip(prob * 255 + 0.5, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)


def pair_paths(prompt: Path, query: Path, out: Path) -> list[tuple[Path, Path, Path]]:
    """(prompt, query, heat map) paths: one pair, or folders paired by file name."""
    if prompt.is_dir() != query.is_dir():
        raise SynthError("--prompt and --query must both be files or both be folders")
    if not prompt.is_dir():
        return [(prompt, query, out)]
    names = sorted(p.name for p in query.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    pairs = [
        (prompt / n, query / n, out / f"{Path(n).stem}.png")
        for n in names
        if (prompt / n).is_file()
    ]
    if not pairs:
        raise SynthError(f"{prompt} and {query}: no image file names in common to pair")
    return pairs


def predict_files(
    predictor: ModelPredictor | str, prompt: str, query: str, out: str, *, device: str = "auto"
) -> list[Prediction]:
    """Score query images against prompts and write jet heat maps (query size) to ``out``.

    ``predictor`` is a ``ModelPredictor`` (a checkpoint's model or the training-free floor) or
    a checkpoint path. ``prompt``/``query`` are two image files (``out`` a file) or two folders
    whose images pair by file name (``out`` a folder; it also receives ``scores.csv``). The
    image score is the map's maximum; heat maps show values in [0, 1] (a probability, or a
    feature distance for the floor).
    """
    if isinstance(predictor, str):
        predictor = ModelPredictor.from_checkpoint(predictor, device)
    pairs = pair_paths(Path(prompt), Path(query), Path(out))
    if Path(prompt).is_dir():
        Path(out).mkdir(parents=True, exist_ok=True)
    results = []
    for p_path, q_path, h_path in pairs:
        q = _read_rgb(q_path)
        p = _read_rgb(p_path)
        if p.shape != q.shape:
            p = cv2.resize(p, (q.shape[1], q.shape[0]), interpolation=cv2.INTER_AREA)
        prob = predictor.predict(p[None], q[None])[0]
        h_path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(h_path), heatmap_image(prob)):
            raise SynthError(f"{h_path}: cannot write the heat map (use a .png/.jpg name)")
        results.append(Prediction(str(p_path), str(q_path), str(h_path), float(prob.max())))
    if Path(prompt).is_dir():
        lines = ["prompt,query,heatmap,score"] + [
            f"{r.prompt},{r.query},{r.heatmap},{r.score:.6f}" for r in results
        ]
        (Path(out) / "scores.csv").write_text("\n".join(lines) + "\n")
    return results
