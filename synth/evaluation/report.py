"""Reporting for ``synth eval``: the table, CSV/JSON files, and overlays of best/worst cases.

The table is a Markdown pipe table in percent with one decimal, mean ± std over runs, in the
column order of the paper's table, so it can be pasted next to it. Overlays show, per
category, the test images the model gets most wrong and most right at image level (module
function :func:`pick_cases`), each as ``query | prompt | heat map on the query`` with the
ground-truth contour in green, under a caption strip with the defect type and image score.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from synth.errors import SourceError
from synth.evaluation.datasets import Category, load_image
from synth.metrics import METRIC_NAMES

if TYPE_CHECKING:
    from synth.evaluation.protocol import EvalResult


def _cell(mean: float, std: float, runs: int) -> str:
    if not math.isfinite(mean):
        return "n/a"
    if runs == 1:
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f}±{100 * std:.1f}"


def format_table(result: EvalResult) -> str:
    """Header lines (dataset, sizes, convention, prompts), the table, then the notes."""
    cfg = result.config
    n = len(result.runs)
    size = "x".join(str(v) for v in cfg["eval_size"])
    model = "x".join(str(v) for v in cfg["model_size"])
    spread = f"mean ± std over {n} runs" if n > 1 else "1 run"
    lines = [
        f"dataset: {cfg['dataset']} ({cfg['data']}), {len(result.categories)} categories, "
        f"evaluated at {size} (model input {model})",
        f"convention: {cfg['convention_description']}",
        f"prompts: {cfg['prompt_select']} — {', '.join(result.runs)} ({spread})",
        "",
        "| category | " + " | ".join(METRIC_NAMES) + " |",
        "|---" * (len(METRIC_NAMES) + 1) + "|",
    ]
    for cat, row in result.summary().items():
        cells = [_cell(*row[m], n) for m in METRIC_NAMES]
        name = "**mean**" if cat == "mean" else cat
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if result.notes:
        lines.append("")
        lines.extend(f"note: {note}" for note in result.notes)
    return "\n".join(lines)


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "unknown"


def write_results(result: EvalResult, out_dir: Path | str) -> list[Path]:
    """Write ``eval.json`` (everything), ``eval_summary.csv`` and ``eval_images.csv``.

    Undefined metrics are ``null`` in JSON and empty in CSV; values are fractions in [0, 1].
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SourceError(f"{out}: cannot create output folder ({e.strerror})") from e
    summary = result.summary()
    doc = {
        "config": result.config,
        "versions": {p: _version(p) for p in ("synth", "numpy", "opencv-python-headless")},
        "runs": result.runs,
        "summary": {
            cat: {
                m: {"mean": _finite_or_none(v[0]), "std": _finite_or_none(v[1])}
                for m, v in row.items()
            }
            for cat, row in summary.items()
        },
        "per_run": [
            {
                "run": label,
                "categories": {
                    cat: {m: _finite_or_none(v) for m, v in vals.items()}
                    for cat, vals in run.items()
                },
            }
            for label, run in zip(result.runs, result.per_run, strict=True)
        ],
        "notes": result.notes,
    }
    paths = [out / "eval.json", out / "eval_summary.csv", out / "eval_images.csv"]
    paths[0].write_text(json.dumps(doc, indent=2) + "\n")
    with open(paths[1], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["category", *METRIC_NAMES, *(f"{m}_std" for m in METRIC_NAMES)])
        for cat, row in summary.items():
            means = [_csv_num(row[m][0]) for m in METRIC_NAMES]
            stds = [_csv_num(row[m][1]) for m in METRIC_NAMES]
            w.writerow([cat, *means, *stds])
    with open(paths[2], "w", newline="") as f:
        fields = ["run", "category", "image", "prompt", "label", "defect", "score"]
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(asdict(rec) for rec in result.images)
    return paths


def _csv_num(x: float) -> str:
    return f"{x:.6f}" if math.isfinite(x) else ""


def pick_cases(labels: np.ndarray, scores: np.ndarray, k: int) -> tuple[list[int], list[int]]:
    """Indices of the ``k`` worst and ``k`` best images at image level.

    Badness is the score's rank percentile for a normal image (a high score is a false alarm)
    and one minus it for an anomalous one (a low score is a miss), so both kinds compete on
    one scale; ties go to the earlier image.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    n = scores.size
    pct = np.argsort(np.argsort(scores, kind="stable"), kind="stable") / max(n - 1, 1)
    badness = np.where(labels, 1.0 - pct, pct)
    order = np.argsort(-badness, kind="stable")
    k = min(k, n)
    worst = [int(i) for i in order[:k]]
    best = [int(i) for i in order[::-1] if i not in worst][:k]
    return worst, best


def overlay(
    image: np.ndarray, amap: np.ndarray, mask: np.ndarray, lo: float, hi: float
) -> np.ndarray:
    """RGB uint8: the map, scaled by ``lo``..``hi``, as a JET heat map on the image + GT contour."""
    scaled = np.clip((amap - lo) / (hi - lo) if hi > lo else np.zeros_like(amap), 0.0, 1.0)
    heat = cv2.applyColorMap((255 * scaled).astype(np.uint8), cv2.COLORMAP_JET)
    heat = np.ascontiguousarray(heat[..., ::-1])
    out = cv2.addWeighted(image, 0.5, heat, 0.5, 0.0)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (0, 255, 0), 1)
    return out


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


def save_overlays(
    out_dir: Path,
    category: Category,
    maps: np.ndarray,
    masks: np.ndarray,
    scores: np.ndarray,
    prompts: list[Path],
    k: int,
) -> list[Path]:
    """Write ``<category>_<worst|best><rank>_<defect>_<image>.png`` for the picked cases.

    The heat maps share the category's min-max scale, so colours compare across its images.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = np.array([it.label for it in category.test])
    worst, best = pick_cases(labels, scores, k)
    lo, hi = float(maps.min()), float(maps.max())
    size = maps.shape[1:]
    written = []
    for kind, idx in (("worst", worst), ("best", best)):
        for rank, i in enumerate(idx, start=1):
            item = category.test[i]
            query = load_image(item.image, size)
            panel = np.concatenate(
                [query, load_image(prompts[i], size), overlay(query, maps[i], masks[i], lo, hi)],
                axis=1,
            )
            header = np.zeros((16, panel.shape[1], 3), np.uint8)
            caption = f"query | prompt | map   {item.defect}, score {scores[i]:.3g}"
            cv2.putText(header, caption, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
            panel = np.concatenate([header, panel], axis=0)
            stem = "_".join(_safe(t) for t in (category.name, f"{kind}{rank}", item.defect))
            path = out_dir / f"{stem}_{_safe(item.image.stem)}.png"
            if not cv2.imwrite(str(path), np.ascontiguousarray(panel[..., ::-1])):
                raise SourceError(f"{path}: cannot write overlay")
            written.append(path)
    return written
