"""The one-prompt protocol: choose a normal prompt, run the model, score each category.

Prompt rules (one *run* = one complete pass over every category):

``random`` (MetaUAS)
    For each category one training image, index ``derive(seed, "prompt", category)`` into the
    sorted list of normal training images, shared by every test image of the category. Several
    seeds give several runs; the report shows mean ± std over runs (population std, ddof 0),
    as the paper does over its 5 seeds.
``list``
    Prompts fixed by JSON files, one run per file. A file maps a category name to a path
    (or to ``{"filename": path}``, the official ``oneprompt_seed*.json`` format), and/or a test
    image path to a path or a list of paths of which the first is used (the official
    ``test-train-top10pair-eb4.json`` format, JSON or JSON lines). Relative paths are relative
    to the data root. An entry for the test image wins over its category's.
``nearest`` (MetaUAS*)
    For each test image, the normal training image of its category with the highest cosine
    similarity between ``predictor.embed`` features (top-1; ties go to the first in sorted
    order). Deterministic, so a single run whatever the seeds.

Images are resized to ``predictor.size`` (INTER_AREA) for the model; maps are resized
bilinearly to the evaluation size when it differs, and masks are resized to it as the
convention says (nearest for ``standard``, bilinear-then-``> 0`` for ``paper`` like the MetaUAS
code). Metrics are computed per category at the evaluation size (:mod:`synth.metrics`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from synth.errors import ConfigError, SourceError, SynthError
from synth.evaluation.datasets import Category, TestItem, load_image, load_mask, read_dataset
from synth.evaluation.predictor import Predictor
from synth.evaluation.report import save_overlays
from synth.metrics import CONVENTIONS, IMAGE_SCORES, METRIC_NAMES, evaluate_category
from synth.rng import derive

PROMPT_SELECT = ("random", "nearest")


@dataclass(frozen=True)
class PromptRun:
    """One run's prompt rule: ``kind`` random (with ``seed``), list (with ``table``) or nearest.

    ``table`` maps a category name or a resolved test-image path to a prompt path.
    """

    kind: str
    label: str
    seed: int | None = None
    table: dict[str, Path] | None = None


@dataclass
class ImageRecord:
    """The outcome for one test image in one run (a row of ``eval_images.csv``)."""

    run: str
    category: str
    image: str
    prompt: str
    label: int
    defect: str
    score: float


@dataclass
class EvalResult:
    """Everything ``synth eval`` reports: per-run metrics per category, plus provenance.

    Attributes:
        config: the options of the run (dataset, sizes, convention, prompts, ...).
        runs: run labels, e.g. ``["seed 1", "seed 3"]``.
        categories: category names in report order.
        per_run: one dict per run: category -> metric name -> value in [0, 1] (NaN = undefined).
        images: per-image scores and prompts of every run.
        notes: remarks to print under the table.
    """

    config: dict
    runs: list[str]
    categories: list[str]
    per_run: list[dict[str, dict[str, float]]]
    images: list[ImageRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        """Category (and ``"mean"``) -> metric -> (mean, std) over runs.

        ``mean`` averages the categories within each run first (ignoring undefined values),
        then takes mean ± std of those averages across runs, as the paper does over seeds.
        """
        out: dict[str, dict[str, tuple[float, float]]] = {}
        for cat in self.categories:
            out[cat] = {m: _mean_std([r[cat][m] for r in self.per_run]) for m in METRIC_NAMES}
        means = []
        for r in self.per_run:
            row = {}
            for m in METRIC_NAMES:
                vals = np.array([r[c][m] for c in self.categories], dtype=np.float64)
                row[m] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
            means.append(row)
        out["mean"] = {m: _mean_std([row[m] for row in means]) for m in METRIC_NAMES}
        return out


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    if not np.isfinite(v).all():
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std())


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"256"`` -> (256, 256), ``"256x320"`` -> (256, 320) as (H, W); None stays None."""
    if text is None or str(text).strip() == "":
        return None
    parts = str(text).lower().replace(" ", "").split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) not in (1, 2) or min(dims) < 8:
        raise ConfigError(f"--size: expected an integer or HxW (each >= 8), got {text!r}")
    return (dims[0], dims[-1])


def parse_seeds(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"1,3,5"`` -> (1, 3, 5); duplicates are an error (they would shrink the std)."""
    if not isinstance(text, str):
        seeds = tuple(int(s) for s in text)
    else:
        try:
            seeds = tuple(int(s) for s in text.split(",") if s.strip())
        except ValueError:
            raise ConfigError(
                f"--prompt-seed: expected integers like 1,3,5, got {text!r}"
            ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--prompt-seed: expected distinct integers like 1,3,5, got {text!r}")
    return seeds


def seeded_prompt(category: Category, seed: int) -> Path:
    """The ``random`` rule: a training image chosen by (seed, category name) only."""
    index = int(derive(seed, "prompt", category.name).integers(len(category.train)))
    return category.train[index]


def _resolve(root: Path, value: object, where: str) -> Path:
    if isinstance(value, dict):
        value = value.get("filename")
    elif isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a path, {{'filename': path}} or a list of paths")
    p = Path(value)
    p = p if p.is_absolute() else root / p
    if not p.is_file():
        raise SourceError(f"{p}: prompt image listed in {where} not found")
    return p


def load_prompt_list(path: Path | str, root: Path | str) -> dict[str, Path]:
    """Read a prompt JSON (object, or JSON lines of objects) into key -> prompt path.

    Keys are category names as written, or test-image paths resolved against ``root``.
    """
    path, root = Path(path), Path(root)
    try:
        text = path.read_text()
    except OSError as e:
        raise SourceError(f"{path}: cannot read prompt list ({e.strerror})") from e
    try:
        objs = [json.loads(text)]
    except json.JSONDecodeError:
        try:
            objs = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise SourceError(f"{path}: not JSON or JSON lines ({e.msg}, line {e.lineno})") from e
    table: dict[str, Path] = {}
    for obj in objs:
        if not isinstance(obj, dict):
            raise SourceError(f"{path}: expected a JSON object mapping names to prompt paths")
        for key, value in obj.items():
            prompt = _resolve(root, value, f"{path} [{key!r}]")
            table[key if "/" not in key and "\\" not in key else _key(root / key)] = prompt
    return table


def _key(p: Path) -> str:
    return str(p.resolve())


def listed_prompts(table: dict[str, Path], category: Category, source: str) -> list[Path]:
    """The ``list`` rule for one category: the query's own entry, else the category's."""
    out = []
    for item in category.test:
        prompt = table.get(_key(item.image), table.get(category.name))
        if prompt is None:
            raise ConfigError(
                f"{source}: no prompt for category {category.name!r} or image {item.image}"
            )
        out.append(prompt)
    return out


class _ImageCache:
    """Decoded, resized images by path; ``max_items`` None keeps all (queries reused by runs)."""

    def __init__(self, size: tuple[int, int], max_items: int | None) -> None:
        self.size, self.max_items, self._d = size, max_items, {}

    def get(self, path: Path) -> np.ndarray:
        img = self._d.get(path)
        if img is None:
            img = load_image(path, self.size)
            if self.max_items is None or len(self._d) < self.max_items:
                self._d[path] = img
        return img

    def stack(self, paths: Sequence[Path]) -> np.ndarray:
        return np.stack([self.get(p) for p in paths])


def _embed(predictor: Predictor, images: np.ndarray) -> np.ndarray:
    f = np.asarray(predictor.embed(images), dtype=np.float64)
    if f.ndim != 2 or len(f) != len(images) or not np.isfinite(f).all():
        raise SynthError(
            f"predictor.embed returned {f.shape} for {len(images)} images; "
            "expected finite (B, D) features"
        )
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def train_features(
    predictor: Predictor, category: Category, size: tuple[int, int], batch_size: int
) -> np.ndarray:
    """L2-normalised ``embed`` features of a category's training images (the prompt pool)."""
    feats = [
        _embed(
            predictor, np.stack([load_image(p, size) for p in category.train[i : i + batch_size]])
        )
        for i in range(0, len(category.train), batch_size)
    ]
    return np.concatenate(feats)


def nearest_prompts(
    pool: Sequence[Path], pool_features: np.ndarray, query_features: np.ndarray
) -> list[Path]:
    """The ``nearest`` rule: top-1 cosine similarity, ties to the first pool image."""
    best = np.argmax(query_features @ pool_features.T, axis=1)
    return [pool[i] for i in best]


def _check_maps(maps: np.ndarray, b: int, size: tuple[int, int]) -> np.ndarray:
    maps = np.asarray(maps, dtype=np.float32)
    if maps.shape != (b, *size):
        raise SynthError(f"predictor.predict returned {maps.shape}, expected {(b, *size)}")
    if not np.isfinite(maps).all():
        raise SynthError("predictor.predict returned NaN or infinite anomaly values")
    return maps


def predict_category(
    predictor: Predictor,
    category: Category,
    prompts: Sequence[Path] | None,
    eval_size: tuple[int, int],
    batch_size: int,
    queries: _ImageCache,
    prompt_images: _ImageCache,
    on_batch: Callable[[int], None] = lambda n: None,
) -> tuple[np.ndarray, list[Path]]:
    """Anomaly maps (N, H, W) at ``eval_size`` and the prompt used for each test image.

    Args:
        predictor: the model.
        category: the category to run.
        prompts: one prompt path per test item, or None for the ``nearest`` rule.
        eval_size: (H, W) of the returned maps.
        batch_size: images per ``predict`` call.
        queries: cache of query images at the model's size (reused across runs).
        prompt_images: cache of prompt images at the model's size.
        on_batch: called with the batch size after each batch (progress bars).
    """
    in_size = tuple(predictor.size)
    pool_feats = None
    if prompts is None:
        pool_feats = train_features(predictor, category, in_size, batch_size)
    h, w = eval_size
    maps = np.empty((len(category.test), h, w), dtype=np.float32)
    used: list[Path] = []
    for start in range(0, len(category.test), batch_size):
        items: Sequence[TestItem] = category.test[start : start + batch_size]
        q = queries.stack([it.image for it in items])
        if pool_feats is None:
            chosen = list(prompts[start : start + len(items)])
        else:
            chosen = nearest_prompts(category.train, pool_feats, _embed(predictor, q))
        out = _check_maps(predictor.predict(prompt_images.stack(chosen), q), len(items), in_size)
        for i, m in enumerate(out):
            maps[start + i] = (
                m if m.shape == (h, w) else cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
            )
        used.extend(chosen)
        on_batch(len(items))
    return maps, used


def plan_runs(
    seeds: Sequence[int], prompt_lists: Sequence[Path | str], prompt_select: str, root: Path
) -> list[PromptRun]:
    """Turn the prompt options into runs (module docstring)."""
    if prompt_select not in PROMPT_SELECT:
        raise ConfigError(f"--prompt-select must be random or nearest, got {prompt_select!r}")
    if prompt_select == "nearest":
        if prompt_lists:
            raise ConfigError("--prompt-list and --prompt-select nearest exclude each other")
        return [PromptRun("nearest", "nearest")]
    if prompt_lists:
        return [
            PromptRun("list", f"list {Path(p).name}", table=load_prompt_list(p, root))
            for p in prompt_lists
        ]
    return [PromptRun("random", f"seed {s}", seed=s) for s in seeds]


def describe_convention(convention: str, image_score: str, topk_frac: float) -> str:
    """One line saying what the numbers mean, printed above the table and stored in JSON."""
    score = "max" if image_score == "max" else f"mean of top {topk_frac:.2%} pixels"
    if convention == "paper":
        return (
            f"paper (MetaUAS code): per-category min-max maps, image score = {score}, "
            "PRO on 200 thresholds with FPR < 0.3 rescaled to [0,1], ROC as max(AUC, 1-AUC), "
            "masks resized bilinear > 0"
        )
    return (
        f"standard: raw maps, image score = {score}, exact AUPRO to FPR 0.3 divided by 0.3, "
        "masks resized nearest"
    )


def run_eval(
    predictor: Predictor,
    dataset: str,
    root: Path | str,
    *,
    categories: Sequence[str] | None = None,
    size: tuple[int, int] | None = None,
    seeds: Sequence[int] = (0,),
    prompt_lists: Sequence[Path | str] = (),
    prompt_select: str = "random",
    convention: str = "standard",
    image_score: str = "max",
    topk_frac: float = 0.01,
    batch_size: int = 16,
    save_maps: Path | str | None = None,
    overlays: int = 3,
    progress: bool = True,
    meta: dict | None = None,
    on_maps: Callable[[str, int, np.ndarray, np.ndarray, np.ndarray], None] | None = None,
) -> EvalResult:
    """Evaluate a predictor on a benchmark with the one-prompt protocol.

    Args:
        predictor: any :class:`~synth.evaluation.predictor.Predictor`.
        dataset: ``mvtec``, ``visa`` or ``folder`` (:mod:`synth.evaluation.datasets`).
        root: the dataset root.
        categories: subset to evaluate, in this order; all (sorted) by default.
        size: (H, W) at which metrics are computed; ``predictor.size`` by default.
        seeds: prompt seeds of the ``random`` rule, one run each.
        prompt_lists: JSON prompt files, one run each (overrides ``seeds``).
        prompt_select: ``random`` or ``nearest``.
        convention: ``standard`` or ``paper`` (:mod:`synth.metrics`).
        image_score: ``max`` or ``topk``.
        topk_frac: fraction of pixels averaged by ``topk``.
        batch_size: images per model call.
        save_maps: folder for overlay PNGs of the best and worst cases of the first run.
        overlays: how many best and how many worst cases per category.
        progress: show a tqdm bar over test images.
        meta: extra provenance stored in ``config`` (e.g. the checkpoint path).
        on_maps: called as ``on_maps(category, run_index, maps, masks, labels)`` once the maps
            (N, H, W) float32 of a (category, run) are computed, with the bool masks (N, H, W)
            and int labels (N,) they are scored against, e.g. to keep a compact summary for
            :mod:`synth.evaluation.paired` without holding every map.
    """
    if convention not in CONVENTIONS:
        raise ConfigError(f"--convention must be standard or paper, got {convention!r}")
    if image_score not in IMAGE_SCORES:
        raise ConfigError(f"--image-score must be max or topk, got {image_score!r}")
    if not 0.0 < topk_frac <= 1.0:
        raise ConfigError(f"--topk-frac must be in (0, 1], got {topk_frac}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    root = Path(root)
    in_size = (int(predictor.size[0]), int(predictor.size[1]))
    eval_size = tuple(size) if size is not None else in_size
    cats = read_dataset(dataset, root, categories)
    runs = plan_runs(parse_seeds(seeds), prompt_lists, prompt_select, root)
    mask_resize = "bilinear_any" if convention == "paper" else "nearest"
    result = EvalResult(
        config={
            **(meta or {}),
            "dataset": dataset,
            "data": str(root),
            "model_size": list(in_size),
            "eval_size": list(eval_size),
            "prompt_select": "list" if prompt_lists else prompt_select,
            "runs": [{"kind": r.kind, "label": r.label, "seed": r.seed} for r in runs],
            "prompt_lists": [str(p) for p in prompt_lists],
            "convention": convention,
            "convention_description": describe_convention(convention, image_score, topk_frac),
            "image_score": image_score,
            "topk_frac": topk_frac,
        },
        runs=[r.label for r in runs],
        categories=[c.name for c in cats],
        per_run=[{} for _ in runs],
    )
    if prompt_select == "nearest" and len(parse_seeds(seeds)) > 1:
        result.notes.append("nearest prompts are deterministic: one run, --prompt-seed ignored")
    total = len(runs) * sum(len(c.test) for c in cats)
    with tqdm(total=total, desc="synth eval", unit="img", disable=not progress) as bar:
        for cat in cats:
            bar.set_postfix_str(cat.name)
            masks = np.stack([load_mask(it, eval_size, mask_resize) for it in cat.test])
            labels = np.array([it.label for it in cat.test], dtype=np.int64)
            queries = _ImageCache(in_size, None if len(runs) > 1 else 0)
            prompt_images = _ImageCache(in_size, 64)
            for r, run in enumerate(runs):
                if run.kind == "random":
                    prompts = [seeded_prompt(cat, run.seed)] * len(cat.test)
                elif run.kind == "list":
                    prompts = listed_prompts(run.table, cat, run.label)
                else:
                    prompts = None
                maps, used = predict_category(
                    predictor,
                    cat,
                    prompts,
                    eval_size,
                    batch_size,
                    queries=queries,
                    prompt_images=prompt_images,
                    on_batch=bar.update,
                )
                if on_maps is not None:
                    on_maps(cat.name, r, maps, masks, labels)
                m = evaluate_category(maps, masks, labels, convention, image_score, topk_frac)
                result.per_run[r][cat.name] = m.values
                result.notes.extend(f"{run.label}, {cat.name}: {n}" for n in m.notes)
                for it, p, s in zip(cat.test, used, m.image_scores, strict=True):
                    rec = ImageRecord(
                        run=run.label,
                        category=cat.name,
                        image=str(it.image),
                        prompt=str(p),
                        label=it.label,
                        defect=it.defect,
                        score=float(s),
                    )
                    result.images.append(rec)
                if save_maps is not None and r == 0:
                    save_overlays(Path(save_maps), cat, maps, masks, m.image_scores, used, overlays)
    _note_undefined(result)
    return result


def _note_undefined(result: EvalResult) -> None:
    for m in METRIC_NAMES:
        bad = sorted({c for r in result.per_run for c in r if not np.isfinite(r[c][m])})
        if bad:
            result.notes.append(
                f"{m} undefined for {', '.join(bad)} (a class is missing); mean over the others"
            )
