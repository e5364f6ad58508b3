"""``synth predict``: heat maps, raw score maps and image scores for one (prompt, query) pair or
two folders."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from synth.errors import SynthError
from synth.train.predictor import ModelPredictor

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
#: ``--raw`` choices: float32 ``.npy``, 16-bit PNG plus a JSON scale, or heat maps only.
RAW_FORMATS = ("npy", "png16", "none")
#: The largest 16-bit PNG value: ``score = offset + value / PNG16_MAX * scale``.
PNG16_MAX = 65535


@dataclass(frozen=True)
class Prediction:
    """One scored pair: the image score is the map's maximum (paper protocol).

    ``raw`` is the raw score map's file (None with ``raw="none"``); for a 16-bit PNG,
    ``raw_offset``/``raw_scale`` invert it: ``score = raw_offset + value / 65535 * raw_scale``.
    """

    prompt: str
    query: str
    heatmap: str
    score: float
    raw: str | None = None
    raw_offset: float | None = None
    raw_scale: float | None = None


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SynthError(f"{path}: cannot read this image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def heatmap_image(prob: np.ndarray) -> np.ndarray:
    """BGR colour map (jet) of a probability map in [0, 1], for writing with OpenCV."""
    return cv2.applyColorMap(np.clip(prob * 255 + 0.5, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)


def raw_path(heatmap: Path, raw: str) -> Path | None:
    """Where the raw map of ``heatmap`` goes: ``<stem>.raw.npy`` or ``<stem>.raw.png``."""
    if raw == "none":
        return None
    return heatmap.with_name(f"{heatmap.stem}.raw.{'npy' if raw == 'npy' else 'png'}")


def png16_scale(score_map: np.ndarray, probability: bool) -> tuple[float, float]:
    """(offset, scale) of a map's 16-bit encoding: (0, 1) for probabilities, else the map's
    (min, max - min), so the full 16 bits cover its range."""
    if probability:
        return 0.0, 1.0
    lo, hi = float(score_map.min()), float(score_map.max())
    return lo, hi - lo


def encode_png16(score_map: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """uint16 ``round((score - offset) / scale * 65535)`` (all 0 for a constant map)."""
    if scale <= 0:
        return np.zeros(score_map.shape, np.uint16)
    v = np.rint((score_map.astype(np.float64) - offset) / scale * PNG16_MAX)
    return np.clip(v, 0, PNG16_MAX).astype(np.uint16)


def decode_png16(values: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """The scores of a 16-bit map, within ``scale / 65535`` of those written."""
    return (offset + values.astype(np.float64) / PNG16_MAX * scale).astype(np.float32)


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


def _check_distinct(outputs: list[Path]) -> None:
    """Two queries whose outputs share a name (a.png and a.jpg) would overwrite each other."""
    seen: set[Path] = set()
    for path in outputs:
        if path in seen:
            raise SynthError(f"{path}: two query images would write this file; rename one of them")
        seen.add(path)


def _write_raw(
    path: Path, score_map: np.ndarray, raw: str, probability: bool
) -> tuple[float | None, float | None]:
    """Write the raw map; returns the 16-bit (offset, scale), (None, None) for ``npy``."""
    if raw == "npy":
        np.save(path, score_map)
        return None, None
    if not np.isfinite(score_map).all():
        raise SynthError(f"{path}: the score map has NaN/inf values; use --raw npy")
    offset, scale = png16_scale(score_map, probability)
    if not cv2.imwrite(str(path), encode_png16(score_map, offset, scale)):
        raise SynthError(f"{path}: cannot write the 16-bit raw map")
    sidecar = {
        "raw": path.name,
        "encoding": "png16",
        "decode": "score = offset + value / 65535 * scale",
        "offset": offset,
        "scale": scale,
        "probability": probability,
        "shape": list(score_map.shape),
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return offset, scale


def predict_files(
    predictor: ModelPredictor | str,
    prompt: str,
    query: str,
    out: str,
    *,
    device: str = "auto",
    raw: str = "npy",
) -> list[Prediction]:
    """Score query images against prompts; write jet heat maps and raw score maps to ``out``.

    ``predictor`` is a ``ModelPredictor`` (a checkpoint's model or the training-free floor) or
    a checkpoint path. ``prompt``/``query`` are two image files (``out`` a file) or two folders
    whose images pair by file name (``out`` a folder; it also receives ``scores.csv``). The
    image score is the map's maximum; heat maps show values clipped to [0, 1] (a probability,
    or a feature distance for the floor).

    ``raw`` writes, next to each heat map ``<stem>.<ext>``, the map exactly as the predictor
    returns it at query size, before colour mapping or clipping: ``npy`` = ``<stem>.raw.npy``,
    float32 (H, W); ``png16`` = ``<stem>.raw.png``, uint16, with ``<stem>.raw.json`` holding
    ``offset`` and ``scale`` (``score = offset + value / 65535 * scale``: (0, 1) for a model's
    probabilities, the map's (min, max - min) for other scores); ``none`` = heat maps only.
    """
    if raw not in RAW_FORMATS:
        raise SynthError(f"raw {raw!r}: use one of {', '.join(RAW_FORMATS)}")
    if isinstance(predictor, str):
        predictor = ModelPredictor.from_checkpoint(predictor, device)
    # ModelPredictor applies a sigmoid to models that output logits: those maps are probabilities.
    probability = getattr(predictor, "logits", False) is True
    pairs = pair_paths(Path(prompt), Path(query), Path(out))
    raws = [raw_path(h, raw) for _, _, h in pairs]
    _check_distinct([h for _, _, h in pairs] + [r for r in raws if r is not None])
    if Path(prompt).is_dir():
        Path(out).mkdir(parents=True, exist_ok=True)
    results = []
    for (p_path, q_path, h_path), r_path in zip(pairs, raws, strict=True):
        q = _read_rgb(q_path)
        p = _read_rgb(p_path)
        if p.shape != q.shape:
            p = cv2.resize(p, (q.shape[1], q.shape[0]), interpolation=cv2.INTER_AREA)
        prob = np.asarray(predictor.predict(p[None], q[None])[0], dtype=np.float32)
        h_path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(h_path), heatmap_image(prob)):
            raise SynthError(f"{h_path}: cannot write the heat map (use a .png/.jpg name)")
        offset = scale = None
        if r_path is not None:
            offset, scale = _write_raw(r_path, prob, raw, probability)
        results.append(
            Prediction(
                str(p_path),
                str(q_path),
                str(h_path),
                float(prob.max()),
                None if r_path is None else str(r_path),
                offset,
                scale,
            )
        )
    if Path(prompt).is_dir():
        with open(Path(out) / "scores.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["prompt", "query", "heatmap", "score", "raw", "raw_offset", "raw_scale"])
            for r in results:
                w.writerow(
                    [r.prompt, r.query, r.heatmap, f"{r.score:.6f}", r.raw or ""]
                    + ["" if v is None else repr(v) for v in (r.raw_offset, r.raw_scale)]
                )
    return results
