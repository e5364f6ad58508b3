"""Data to defects: does a synth store teach MetaUAS to find real anomalies?

One command builds a store from real COCO images and DTD textures with a recipe (the paper's
mix by default, the textures also as surfaces to edit), trains MetaUAS with a pretrained
EfficientNet-Lite encoder (the ``cpu`` preset of ``synth train``) once per training seed, and
scores it on real anomaly sets with the one-prompt protocol, next to:

- **floor**: the training-free frozen-encoder feature distance (same encoder, same input size);
- **untrained**: the MetaUAS the trainer starts from (step 0, first training seed).

It prints one table (per set and mean, each training seed and their spread), each predictor's
difference to the floor on the mean and on its worst set, and a paired bootstrap verdict
(beats / ties / loses the floor, from a 95% interval over test images, training seeds and
prompt seeds) per set and for the mean.

Usage (2 CPU cores, about 20 minutes per training seed)::

    python benchmarks/learning.py                                 # training seeds 0 and 1
    python benchmarks/learning.py --train-seeds 0 --workdir w     # one seed, then add one:
    python benchmarks/learning.py --train-seeds 0,1 --workdir w --reuse
    python benchmarks/learning.py --sources coco,camvid           # CamVid photos as well
    python benchmarks/learning.py --mix local_texture=0.7,exchange=0.3 --steps 1500
    python benchmarks/learning.py --manifest my-recipe.yaml --minutes 20
    python benchmarks/learning.py --inpainter patchmatch          # exemplar fills, not Telea
    python benchmarks/learning.py --train loss=bce+dice --train aug.misalign_p=0
    python benchmarks/learning.py --texture-bases 0 --train distance_levels= --lr 1e-3 \
        --train aug.misalign_p=0.5 --train aug.elastic=0.1 --train aug.misalign_kinds= \
        --train aug.ignore_unseen=0                               # the paper's bases and model

The inputs default to ``../shared/data`` next to the repository (``coco64``, ``camvid``,
``textures``, ``anomaly``); ``--coco``, ``--camvid``, ``--textures`` and ``--data`` point
elsewhere (``--data`` takes any MVTec-layout folder of categories). The paper's MVTec row is
printed under the table for scale only: other data, another encoder, another budget.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pickle
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synth.errors import SynthError  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
#: The paper's recipe (``manifests/metauas-coco2017.yaml``): half local-region edits, a quarter
#: object exchange/paste, a quarter object removal pairs in both roles.
PAPER_MIX = {
    "local_texture": 0.45,
    "local_color": 0.05,
    "exchange": 0.13,
    "appearance_paste": 0.06,
    "disappearance_paste": 0.06,
    "disappearance_inpaint": 0.125,
    "appearance_inpaint": 0.125,
}
PAPER_EDITS = {
    "appearance_paste": {"max_paste_area": 0.35},
    "disappearance_paste": {"max_paste_area": 0.35},
    "disappearance_inpaint": {"max_remove_area": 0.7},
    "appearance_inpaint": {"max_remove_area": 0.7},
    "local_texture": {"weight_range": [0.2, 1.0], "n_augment": 3, "scale_exp_range": [0, 6]},
}
INPAINTERS = {
    "telea": {"kind": "opencv", "method": "telea", "radius": 5},
    "ns": {"kind": "opencv", "method": "ns", "radius": 5},
    "patchmatch": {"kind": "patchmatch"},
}
#: Where ``--coco`` keeps its annotations (coco64's layout).
COCO_ANNOTATIONS = Path("annotations") / "instances.json"
#: Columns of the table, in the issue's order (the paper's F1max columns are in --json).
COLUMNS = ("P-ROC", "P-PR", "P-PRO", "I-ROC", "I-PR")
#: The paper's MVTec row (MetaUAS, one random prompt, 5 seeds; ``paper-reference.md``).
PAPER_MVTEC = {"P-ROC": 94.6, "P-PR": 59.3, "P-PRO": 82.6, "I-ROC": 90.7, "I-PR": 95.7}


def parse_mix(text: str) -> dict[str, float]:
    """``kind=weight,...`` -> probabilities summing to 1 (weights are rescaled)."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        kind, sep, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or weight < 0:
            raise SynthError(f"--mix {text!r}: use kind=weight pairs, e.g. local_texture=0.5")
        mix[kind.strip()] = weight
    total = sum(mix.values())
    if total <= 0:
        raise SynthError(f"--mix {text!r}: the weights sum to 0")
    return {k: v / total for k, v in mix.items()}


def recipe(args: argparse.Namespace) -> Any:
    """The manifest to build: ``--manifest`` as given, else the paper's mix on coco64, with the
    textures also as plain bases (``--texture-bases``)."""
    from synth.manifest import load_manifest, parse_manifest

    if args.manifest:
        if args.mix or args.edit or args.texture_bases is not None:
            raise SynthError(
                "--mix, --edit and --texture-bases change the built-in recipe; "
                "with --manifest, edit it"
            )
        m = load_manifest(args.manifest)
        overrides = {"n": args.n, "seed": args.build_seed}
        if args.inpainter:
            d = m.with_overrides(**overrides).to_dict()
            d["inpainter"] = INPAINTERS[args.inpainter]
            return parse_manifest(d, base_dir=Path(args.manifest).parent)
        return m.with_overrides(**overrides)
    for what, path in (("--coco", args.coco), ("--textures", args.textures)):
        if not Path(path).is_dir():
            raise SynthError(f"{what} {path}: no such folder; point it at your copy")
    if not (Path(args.coco) / COCO_ANNOTATIONS).is_file():
        raise SynthError(f"--coco {args.coco}: no {COCO_ANNOTATIONS.as_posix()} in it")
    sources = parse_sources(args.sources)
    if "camvid" in sources and not (Path(args.camvid) / "masks").is_dir():
        raise SynthError(f"--camvid {args.camvid}: no masks/ folder in it; point it at your copy")
    mix = parse_mix(args.mix) if args.mix else PAPER_MIX
    raw = {
        "version": 1,
        "name": "learning-benchmark",
        "seed": args.build_seed or 2024,
        "n": args.n or 4096,
        "size": [args.build_size, args.build_size],
        "shard_size": min(128, args.n or 4096),
        "sources": {
            "images": image_sources(
                args.coco,
                args.textures,
                1.0 if args.texture_bases is None else args.texture_bases,
                camvid=args.camvid if "camvid" in sources else None,
                coco_too="coco" in sources,
            ),
            "textures": [{"name": "dtd", "kind": "folder", "root": str(args.textures)}],
        },
        "mix": mix,
        "edits": edit_params(mix, args.edit),
        "inpainter": INPAINTERS[args.inpainter or "telea"],
        "max_attempts": 8,
    }
    return parse_manifest(raw, base_dir=None)


#: Which instances the object edits may use, for every instance source of the recipe.
INSTANCE_FILTERS = {"min_area_frac": 0.005, "max_area_frac": 0.7, "min_side": 16}
#: Instance sources ``--sources`` can name.
SOURCES = ("coco", "camvid")


def parse_sources(text: str) -> tuple[str, ...]:
    """``coco,camvid`` -> the named instance sources, in ``SOURCES`` order."""
    names = {s.strip() for s in text.split(",") if s.strip()}
    if not names or names - set(SOURCES):
        raise SynthError(f"--sources {text!r}: name one or more of {', '.join(SOURCES)}")
    return tuple(s for s in SOURCES if s in names)


def image_sources(
    coco: str,
    textures: str,
    texture_bases: float,
    *,
    camvid: str | None = None,
    coco_too: bool = True,
) -> list[dict[str, Any]]:
    """The recipe's base images: coco64 and/or the CamVid street photos (a ``folder`` source,
    as often as each other), plus the textures as plain surfaces for the local edits with
    weight ``texture_bases`` (0: the paper's COCO-only bases)."""
    if texture_bases < 0:
        raise SynthError(f"--texture-bases {texture_bases}: use a weight >= 0 (1 = as COCO)")
    images: list[dict[str, Any]] = []
    if coco_too:
        images.append(
            {
                "name": "coco",
                "kind": "coco",
                "ann_file": str(Path(coco) / COCO_ANNOTATIONS),
                "image_root": str(Path(coco) / "images"),
                **INSTANCE_FILTERS,
            }
        )
    if camvid is not None:
        images.append({"name": "camvid", "kind": "folder", "root": str(camvid), **INSTANCE_FILTERS})
    if texture_bases > 0:
        images.append(
            {
                "name": "dtd_bases",
                "kind": "plain",
                "root": str(textures),
                "weight": texture_bases * len(images),
            }
        )
    return images


def edit_params(mix: dict[str, float], pairs: list[str]) -> dict[str, dict[str, Any]]:
    """The paper's edit parameters for the kinds in ``mix``, with ``--edit kind.param=value``
    overrides (YAML values: ``local_texture.scale_exp_range=[0,3]``)."""
    import yaml

    params = {k: dict(v) for k, v in PAPER_EDITS.items() if k in mix}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        kind, dot, name = key.partition(".")
        if not sep or not dot or kind not in mix:
            raise SynthError(
                f"--edit {pair!r}: use kind.param=value for a kind of the mix, "
                "e.g. local_texture.scale_exp_range=[0,3]"
            )
        params.setdefault(kind, {})[name] = yaml.safe_load(value)
    return params


#: What the benchmark trains unless its options or ``--train`` say otherwise: the ``cpu``
#: preset of ``synth train`` (``synth.train.presets``), so the benchmark measures exactly what
#: ``synth train --preset cpu`` trains.
PRESET = "cpu"
#: TrainConfig fields the benchmark sets from its budget (``--steps``/``--minutes``).
BUDGET_FIELDS = ("max_steps", "schedule_steps", "epochs")
#: TrainConfig fields the benchmark sets from its own options (``--train`` may not set them too).
OWN_OPTIONS = {
    "encoder": "--encoder",
    "encoder_weights": "--encoder-weights",
    "size": "--size",
    "batch_size": "--batch",
    "lr": "--lr",
    "warmup_steps": "--warmup",
    "seed": "--train-seeds",
    "device": "--device",
}


def preset_options(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The preset's (TrainConfig fields, AugConfig fields), less those the benchmark's own
    options and budget set."""
    from synth.train.presets import get_preset

    preset = get_preset(name)
    own = {*OWN_OPTIONS, *BUDGET_FIELDS}
    return {k: v for k, v in preset.train.items() if k not in own}, dict(preset.aug)


def preset_default(field: str) -> Any:
    """The preset's value of one of the benchmark's own options (``--lr``, ``--size``...)."""
    from synth.train.presets import get_preset

    return get_preset(PRESET).train[field]


def parse_train_options(pairs: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--train key=value`` over the preset's fields -> (TrainConfig fields, AugConfig
    fields), values typed by the field's default (``aug.scale=0.8,1.5`` gives a tuple,
    ``distance_levels=`` an empty one)."""
    import yaml

    from synth.train.config import AugConfig, TrainConfig

    top, aug = preset_options(PRESET)
    defaults = {f: getattr(TrainConfig("s", "o"), f) for f in TrainConfig.__dataclass_fields__}
    aug_defaults = vars(AugConfig())
    for pair in pairs:
        key, sep, value = pair.partition("=")
        target, known = (aug, aug_defaults) if key.startswith("aug.") else (top, defaults)
        name = key.removeprefix("aug.")
        if not sep or name not in known:
            raise SynthError(f"--train {pair!r}: use field=value with a TrainConfig/aug.* field")
        if target is top and name in OWN_OPTIONS:
            raise SynthError(f"--train {pair!r}: use the benchmark's {OWN_OPTIONS[name]} option")
        default = known[name]
        if isinstance(default, bool):
            target[name] = value.lower() in ("1", "true", "yes")
        elif isinstance(default, tuple):
            cast = type(default[0]) if default else yaml.safe_load
            target[name] = tuple(cast(v) for v in value.split(",")) if value else ()
        elif default is None:
            target[name] = value
        else:
            target[name] = type(default)(value)
    return top, aug


def evaluate(predictor: Any, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, list]]:
    """Per category and mean: metric -> (mean, std) over prompt seeds, in percent; and per
    category the compact per-image summaries of each prompt seed's maps, for the paired
    bootstrap (``synth.evaluation.paired``)."""
    from synth.evaluation import MapStatsCollector, run_eval

    keep = MapStatsCollector()
    result = run_eval(
        predictor,
        "mvtec",
        args.data,
        size=(args.eval_size, args.eval_size),
        seeds=args.seeds,
        batch_size=16,
        progress=False,
        on_maps=keep,
    )
    summary = result.summary()
    rows = {cat: {m: [100 * v for v in summary[cat][m]] for m in summary[cat]} for cat in summary}
    return rows, keep.stats


def floor_key(args: argparse.Namespace) -> str:
    """What the floor's scores depend on: encoder, sizes, prompt seeds, every file of the
    anomaly sets (path, size, mtime) and the code that computes them."""
    files = sorted(
        (str(f.relative_to(args.data)), f.stat().st_size, f.stat().st_mtime_ns)
        for f in Path(args.data).rglob("*")
        if f.is_file()
    )
    code = [
        (ROOT / "synth" / part).read_bytes()
        for part in (
            "model/feature_distance.py",
            "model/encoder.py",
            "model/weights.py",
            "evaluation/protocol.py",
            "evaluation/datasets.py",
            "evaluation/paired.py",
            "train/predictor.py",
            "metrics.py",
        )
    ]
    what = [args.encoder, args.encoder_weights, args.size, args.eval_size, args.seeds, files]
    digest = hashlib.sha256(json.dumps(what).encode())
    for blob in code:
        digest.update(blob)
    return digest.hexdigest()[:16]


def floor_scores(args: argparse.Namespace, device: str) -> tuple[dict[str, Any], dict[str, list]]:
    """The floor's rows and map summaries, from ``--cache`` when the same floor was scored
    before (it needs no training, so every run of a comparison shares it)."""
    from synth.train.predictor import ModelPredictor

    path = Path(args.cache) / f"floor-{floor_key(args)}.pkl" if args.cache else None
    if path is not None and path.is_file():
        with path.open("rb") as f:
            return pickle.load(f)
    floor = ModelPredictor.feature_distance(
        args.encoder, args.encoder_weights, args.size, device=device
    )
    scored = evaluate(floor, args)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump(scored, f)
        tmp.replace(path)
    return scored


def calibrate_steps(config: Any, minutes: float, out: Path) -> tuple[int, float]:
    """Steps that fit ``minutes`` of training, timed on a short run of the same config."""
    import dataclasses

    from synth.train.loop import train

    probe = dataclasses.replace(
        config, out=str(out), max_steps=12, log_every=4, progress=False, val_fraction=0.0
    )
    train(probe)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rate = statistics.median(r["samples_per_s"] for r in rows[1:] if "samples_per_s" in r)
    return max(1, int(minutes * 60 * rate / config.batch_size)), rate


def format_table(rows: dict[str, dict[str, Any]], categories: list[str], header: list[str]) -> str:
    """Markdown: one row per (category, predictor), then the paper's MVTec row."""
    lines = [*header, "", "| category | predictor | " + " | ".join(COLUMNS) + " |"]
    lines.append("|---" * (len(COLUMNS) + 2) + "|")
    for cat in [*categories, "mean"]:
        for label, scores in rows.items():
            cells = []
            for m in COLUMNS:
                mean, std = scores[cat][m]
                cells.append("n/a" if not math.isfinite(mean) else f"{mean:.1f}±{std:.1f}")
            name = "**mean**" if cat == "mean" else cat
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    paper = " | ".join(f"{PAPER_MVTEC[m]:.1f}" for m in COLUMNS)
    lines.append(f"| MVTec AD (paper, for scale) | MetaUAS, EfficientNet-b4, 256 px | {paper} |")
    return "\n".join(lines)


def maps_figure(
    predictors: dict[str, Any], data: str, seed: int, per_category: int, size: int = 128
) -> np.ndarray:
    """RGB rows of ``prompt | query | truth | one heat map per predictor`` for the first
    ``per_category`` anomalous test images of each category (prompts drawn as in the table's
    first seed); each predictor's maps share one scale per category (its min to max there)."""
    from synth.evaluation import read_dataset, seeded_prompt
    from synth.evaluation.datasets import load_image, load_mask

    rows = []
    for cat in read_dataset("mvtec", Path(data), None):
        items = [it for it in cat.test if it.label == 1][:per_category]
        prompt = load_image(seeded_prompt(cat, seed), (size, size))
        queries = np.stack([load_image(it.image, (size, size)) for it in items])
        prompts = np.repeat(prompt[None], len(items), axis=0)
        maps = {name: p.predict(prompts, queries) for name, p in predictors.items()}
        for i, it in enumerate(items):
            truth = np.repeat(load_mask(it, (size, size))[..., None] * 255, 3, axis=2)
            tiles = [prompt, queries[i], truth.astype(np.uint8)]
            for m in maps.values():
                lo, hi = float(m.min()), float(m.max())
                scaled = np.clip((m[i] - lo) / max(hi - lo, 1e-12) * 255, 0, 255).astype(np.uint8)
                tiles.append(cv2.applyColorMap(scaled, cv2.COLORMAP_JET)[..., ::-1])
            rows.append(np.hstack(tiles))
    header = np.zeros((20, rows[0].shape[1], 3), np.uint8)
    for j, label in enumerate(["prompt", "query", "truth", *predictors]):
        cv2.putText(
            header,
            label[:18],
            (4 + j * size, 14),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    return np.vstack([header, *rows])


def format_curve(curves: dict[int, list[dict[str, Any]]], floor: dict[str, Any]) -> str:
    """The mean over categories at each evaluated step of each training seed, under the
    floor's row."""
    lines = ["| seed | step | " + " | ".join(f"mean {m}" for m in COLUMNS) + " |"]
    lines.append("|---" * (len(COLUMNS) + 2) + "|")
    lines.append("| floor | | " + " | ".join(f"{floor[m][0]:.1f}" for m in COLUMNS) + " |")
    for seed, curve in curves.items():
        for c in curve:
            cells = " | ".join(f"{c[m][0]:.1f}" for m in COLUMNS)
            lines.append(f"| {seed} | {c['step']} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_argument_group("data")
    src.add_argument(
        "--coco",
        default=str(SHARED / "coco64"),
        help="COCO folder (images/, annotations/instances.json)",
    )
    src.add_argument("--textures", default=str(SHARED / "textures"))
    src.add_argument(
        "--camvid",
        default=str(SHARED / "camvid"),
        help="folder source of street photos (images/, masks/ instance PNGs)",
    )
    src.add_argument(
        "--sources",
        default="coco",
        help="instance sources of the recipe: coco, camvid or coco,camvid [default coco]",
    )
    src.add_argument("--data", default=str(SHARED / "anomaly"), help="MVTec-layout anomaly sets")
    src.add_argument("--manifest", default=None, help="build this manifest instead")
    src.add_argument("--mix", default=None, help="edit mix, e.g. local_texture=0.5,exchange=0.5")
    src.add_argument(
        "--edit",
        action="append",
        default=[],
        metavar="KIND.PARAM=VALUE",
        help="edit parameter of the recipe, e.g. local_texture.scale_exp_range=[0,3]",
    )
    src.add_argument(
        "--inpainter",
        choices=sorted(INPAINTERS),
        default=None,
        help="object-removal fill [default: telea, or the manifest's]",
    )
    src.add_argument(
        "--texture-bases",
        type=float,
        default=None,
        metavar="WEIGHT",
        help="also edit the textures as plain surfaces, WEIGHT times as often as COCO images "
        "(local edits only; 0: the paper's COCO-only bases) [default 1]",
    )
    src.add_argument("--n", type=int, default=None, help="triples to build [default 4096]")
    src.add_argument("--build-size", type=int, default=256, help="store resolution")
    src.add_argument("--build-seed", type=int, default=None)
    src.add_argument("--build-workers", type=int, default=2)
    tr = ap.add_argument_group("training")
    tr.add_argument("--encoder", default=preset_default("encoder"))
    tr.add_argument("--encoder-weights", default=preset_default("encoder_weights"))
    tr.add_argument("--size", type=int, default=preset_default("size"), help="model input size")
    tr.add_argument("--batch", type=int, default=preset_default("batch_size"))
    budget = tr.add_mutually_exclusive_group()
    budget.add_argument(
        "--steps", type=int, default=None, help="optimizer steps per training seed [default 1500]"
    )
    budget.add_argument("--minutes", type=float, default=None, help="training minutes")
    tr.add_argument("--curve-every", type=int, default=0, help="also score the model every N steps")
    tr.add_argument("--lr", type=float, default=preset_default("lr"))
    tr.add_argument(
        "--warmup",
        type=int,
        default=preset_default("warmup_steps"),
        help="warm-up steps of the cosine schedule",
    )
    tr.add_argument(
        "--train-seeds",
        default="0,1",
        help="training seeds, one model each (the spread over them is reported) [default 0,1]",
    )
    tr.add_argument("--device", default="auto")
    tr.add_argument(
        "--train",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other TrainConfig field, or aug.FIELD (repeatable), over the cpu preset "
        "of synth train (synth/train/presets.py), e.g. fusion=concat aug.misalign_p=0.5",
    )
    ev = ap.add_argument_group("evaluation")
    ev.add_argument("--seeds", default="1,2,3", help="prompt seeds (>= 3 for mean±std)")
    ev.add_argument("--eval-size", type=int, default=256, help="size the metrics are computed at")
    ev.add_argument("--workdir", default=None, help="keep the store and run here (default: temp)")
    ev.add_argument(
        "--cache",
        default=str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "synth"),
        help="where the floor's scores are kept between runs ('' = never) [default ~/.cache/synth]",
    )
    ev.add_argument(
        "--reuse",
        action="store_true",
        help="reuse a training seed's model and scores from --workdir when its config, the "
        "evaluation and the code are the same (add seeds to a finished run)",
    )
    ev.add_argument("--boot", type=int, default=1000, help="bootstrap replicates of the verdict")
    ev.add_argument("--json", dest="json_path", default=None)
    ev.add_argument(
        "--maps", default=None, help="PNG of floor / untrained / trained maps on real defects"
    )
    args = ap.parse_args(argv)
    args.seeds = tuple(int(s) for s in args.seeds.split(","))
    try:
        args.train_seeds = tuple(int(s) for s in args.train_seeds.split(","))
    except ValueError:
        sys.exit(f"error: --train-seeds {args.train_seeds!r}: use integers, e.g. 0,1")
    try:
        return run(args)
    except SynthError as e:
        sys.exit(f"error: {e}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses
    import tempfile

    import torch

    from synth.build import build
    from synth.evaluation import read_dataset
    from synth.model import MetaUAS
    from synth.train.config import AugConfig, TrainConfig
    from synth.train.predictor import ModelPredictor

    if not Path(args.data).is_dir():
        raise SynthError(f"--data {args.data}: no such folder of anomaly categories")
    categories = [c.name for c in read_dataset("mvtec", Path(args.data), None)]
    manifest = recipe(args)
    top, aug = parse_train_options(args.train)
    tmp = tempfile.TemporaryDirectory(prefix="synth-learning-")
    work = Path(args.workdir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    store = work / f"store-{manifest.fingerprint()[:12]}.zarr"
    timings: dict[str, float] = {}

    t = time.perf_counter()
    summary = build(manifest, str(store), workers=args.build_workers, progress=True)
    timings["build_s"] = time.perf_counter() - t
    print(summary.render(), file=sys.stderr)

    config = TrainConfig(
        store=str(store),
        out=str(work / "run"),
        encoder=args.encoder,
        encoder_weights=args.encoder_weights,
        size=args.size,
        batch_size=args.batch,
        lr=args.lr,
        warmup_steps=args.warmup,
        seed=args.train_seeds[0],
        device=args.device,
        workers=0,
        log_every=25,
        aug=AugConfig(**aug),
        **top,
    )
    config.validate()
    steps, rate = args.steps or preset_default("max_steps"), None
    if args.minutes is not None:
        shutil.rmtree(work / "calibrate", ignore_errors=True)
        steps, rate = calibrate_steps(config, args.minutes, work / "calibrate")
        print(
            f"budget: {args.minutes:g} min at {rate:.1f} samples/s -> {steps} steps",
            file=sys.stderr,
        )
    config = dataclasses.replace(config, max_steps=steps, schedule_steps=steps, epochs=10**6)

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    size = (args.size, args.size)
    rows: dict[str, dict[str, Any]] = {}
    t = time.perf_counter()
    rows[FLOOR], floor_stats = floor_scores(args, device)
    timings["eval_floor_s"] = time.perf_counter() - t

    t = time.perf_counter()
    torch.manual_seed(config.seed)  # the trainer's own initialisation, before any step
    untrained = MetaUAS(config.model_config(), encoder_weights=args.encoder_weights)
    untrained_predictor = ModelPredictor(untrained, device, size=size)
    rows[UNTRAINED], _ = evaluate(untrained_predictor, args)
    timings["eval_untrained_s"] = time.perf_counter() - t

    timings["train_s"] = timings["eval_curve_s"] = timings["eval_trained_s"] = 0.0
    trained: dict[int, dict[str, Any]] = {}
    trained_stats: dict[int, dict[str, list]] = {}
    curves: dict[int, list[dict[str, Any]]] = {}
    rates: list[float] = []
    checkpoints: dict[int, str] = {}
    raw_stats: dict[int, dict[str, list]] = {}
    for seed in args.train_seeds:
        run_config = dataclasses.replace(config, seed=seed, out=str(work / f"run-seed{seed}"))
        done = Path(run_config.out) / "scores.pkl"
        key = trained_key(run_config, args)
        kept = pickle.loads(done.read_bytes()) if args.reuse and done.is_file() else None
        if kept is not None and kept["key"] == key:
            print(f"training seed {seed}: reusing {done} (same config and code)", file=sys.stderr)
        else:
            result, curve, seed_rates = train_with_curve(run_config, steps, args, timings)
            t = time.perf_counter()
            model = ModelPredictor.from_checkpoint(result.checkpoint, device, size=size)
            scores, stats = evaluate(model, args)
            timings["eval_trained_s"] += time.perf_counter() - t
            curve.append({"step": result.step, **scores["mean"]})
            kept = {
                "key": key,
                "checkpoint": str(result.checkpoint),
                "curve": curve,
                "rates": seed_rates,
                "scores": scores,
                "stats": stats,
            }
            done.write_bytes(pickle.dumps(kept))
        if "raw" not in kept and (raw := raw_weights(kept["checkpoint"], device, size)):
            t = time.perf_counter()
            kept["raw"] = evaluate(raw, args)
            timings["eval_raw_s"] = timings.get("eval_raw_s", 0.0) + time.perf_counter() - t
            done.write_bytes(pickle.dumps(kept))
        rates += kept["rates"]
        checkpoints[seed], curves[seed] = kept["checkpoint"], kept["curve"]
        trained[seed], trained_stats[seed] = kept["scores"], kept["stats"]
        rows[f"trained, seed {seed}"] = trained[seed]
        if "raw" in kept:
            rows[f"trained, seed {seed}, raw weights"], raw_stats[seed] = kept["raw"]
    seeds_label = f"trained, seed {args.train_seeds[0]}"
    if len(args.train_seeds) > 1:
        seeds_label = f"trained, {len(args.train_seeds)} seeds"
        rows[seeds_label] = over_training_seeds(list(trained.values()))

    t = time.perf_counter()
    verdicts = paired_verdicts(floor_stats, trained_stats, categories, args)
    averaging = average_verdicts(raw_stats, trained_stats, categories, args) if raw_stats else {}
    timings["bootstrap_s"] = time.perf_counter() - t
    versus = versus_floor(rows, categories)
    header = [
        f"learning: {len(summary_kinds(manifest))} edit kinds, {manifest.n} triples at "
        f"{manifest.size[0]} px from {args.sources if not args.manifest else args.manifest} "
        f"({args.inpainter or 'manifest/telea'} inpainting); "
        f"{args.encoder} ({args.encoder_weights}) at {args.size} px, batch {args.batch}, "
        f"{steps} steps per training seed ({timings['train_s'] / 60:.1f} min for "
        f"{len(args.train_seeds)}, {statistics.median(rates) if rates else float('nan'):.1f} "
        f"samples/s median), lr {config.lr:g} {config.schedule} (warm-up "
        f"{config.warmup_steps}), loss {config.loss}, fusion {config.fusion}",
        f"eval: {len(categories)} categories from {args.data}, one random prompt per category, "
        f"prompt seeds {','.join(map(str, args.seeds))}, training seeds "
        f"{','.join(map(str, args.train_seeds))}; ± is the std over prompt seeds, and over "
        f"training seeds in the 'trained, N seeds' row; every predictor at {args.size} px, "
        f"metrics at {args.eval_size} px, standard convention",
    ]
    print("\n" + format_table(rows, categories, header))
    print("\n" + format_versus(versus))
    print("\n" + format_verdicts(verdicts, categories, args))
    if averaging:
        title = (
            f"paired bootstrap, the weights' moving average (what the checkpoint ships, "
            f"ema {config.ema:g}) minus the raw weights of the same run"
        )
        print("\n" + format_verdicts({"pooled": averaging}, categories, args, title))
    if any(len(c) > 1 for c in curves.values()):
        print("\n" + format_curve(curves, rows[FLOOR]["mean"]))
    print("\n" + summary_line(verdicts, versus, seeds_label, args, steps, sum(timings.values())))
    out = {
        "config": {k: v for k, v in vars(args).items() if k != "json_path"},
        "manifest": manifest.to_dict(),
        "train_config": config.to_dict(),
        "categories": categories,
        "rows": rows,
        "versus_floor": versus,
        "paired": verdicts,
        "average_vs_raw": averaging,
        "curves": {str(k): v for k, v in curves.items()},
        "checkpoints": {str(k): v for k, v in checkpoints.items()},
        "timings": timings,
        "train_samples_per_s": rates,
    }
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(out, indent=1, default=str))
    if args.maps:
        last = ModelPredictor.from_checkpoint(checkpoints[args.train_seeds[0]], device, size=size)
        floor = ModelPredictor.feature_distance(
            args.encoder, args.encoder_weights, args.size, device=device
        )
        named = {"floor": floor, f"trained s{args.train_seeds[0]}": last}
        figure = maps_figure(named, args.data, args.seeds[0], per_category=3, size=args.size)
        cv2.imwrite(args.maps, figure[..., ::-1])
        print(f"maps: {args.maps}")
    tmp.cleanup()
    return out


def trained_key(config: Any, args: argparse.Namespace) -> str:
    """What a trained seed's scores depend on: its config (store, seed, budget...), the
    evaluation options and the synth code, so ``--reuse`` never returns stale scores."""
    what = [config.to_dict(), args.curve_every, args.seeds, args.eval_size, args.data]
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode())
    for path in sorted((ROOT / "synth").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


FLOOR = "floor (feature distance)"
UNTRAINED = "untrained (step 0)"


def train_with_curve(
    config: Any, steps: int, args: argparse.Namespace, timings: dict[str, float]
) -> tuple[Any, list[dict[str, Any]], list[float]]:
    """Train ``config`` afresh for ``steps``, scoring the checkpoints every ``--curve-every``
    steps on the way (stopping and resuming is exact, so they are one uninterrupted run's)."""
    import dataclasses

    from synth.train.loop import train
    from synth.train.predictor import ModelPredictor

    shutil.rmtree(config.out, ignore_errors=True)  # a benchmark trains afresh, never resumes
    every = args.curve_every
    stops = [*range(every, steps, every)] if every else []
    curve: list[dict[str, Any]] = []
    for i, stop in enumerate([*stops, steps]):
        t = time.perf_counter()
        result = train(dataclasses.replace(config, max_steps=stop, resume=i > 0))
        timings["train_s"] += time.perf_counter() - t
        if stop != steps:
            t = time.perf_counter()
            model = ModelPredictor.from_checkpoint(
                result.checkpoint, config.device, size=(args.size, args.size)
            )
            curve.append({"step": stop, **evaluate(model, args)[0]["mean"]})
            timings["eval_curve_s"] += time.perf_counter() - t
    log = [
        json.loads(line) for line in (Path(config.out) / "metrics.jsonl").read_text().splitlines()
    ]
    return result, curve, [r["samples_per_s"] for r in log if "samples_per_s" in r]


def over_training_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Category -> metric -> (mean, std) over training seeds of each seed's prompt-seed mean."""
    out: dict[str, Any] = {}
    for cat in per_seed[0]:
        out[cat] = {}
        for m in per_seed[0][cat]:
            values = [row[cat][m][0] for row in per_seed]
            out[cat][m] = [float(np.mean(values)), float(np.std(values))]
    return out


def versus_floor(rows: dict[str, dict[str, Any]], categories: list[str]) -> dict[str, Any]:
    """Per predictor and metric: the difference to the floor on the mean and on each set, and
    the worst set (the set a recipe must not give up for the mean)."""
    floor = rows[FLOOR]
    out: dict[str, Any] = {}
    for label, scores in rows.items():
        if label == FLOOR:
            continue
        out[label] = {}
        for m in COLUMNS:
            per_set = {c: scores[c][m][0] - floor[c][m][0] for c in categories}
            finite = {c: d for c, d in per_set.items() if math.isfinite(d)}
            worst = min(finite, key=finite.get) if finite else None
            out[label][m] = {
                "mean": scores["mean"][m][0] - floor["mean"][m][0],
                "per_set": per_set,
                "worst_set": worst,
                "worst": finite[worst] if worst else float("nan"),
            }
    return out


def format_versus(versus: dict[str, Any]) -> str:
    """Markdown: each predictor's mean difference to the floor and its worst set's."""
    metrics = ("P-ROC", "P-PRO", "I-ROC")
    lines = [
        "| predictor - floor | " + " | ".join(f"mean {m} | worst set {m}" for m in metrics) + " |",
        "|---" * (1 + 2 * len(metrics)) + "|",
    ]
    for label, d in versus.items():
        cells = []
        for m in metrics:
            cells.append(f"{d[m]['mean']:+.1f}")
            cells.append(f"{d[m]['worst']:+.1f} ({d[m]['worst_set']})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: Metrics of the paired verdict, in the order the issue ranks them.
VERDICT_METRICS = ("P-ROC", "P-PRO", "I-ROC")


def paired_difference(
    a: dict[str, list],
    b: dict[int, dict[str, list]],
    categories: list[str],
    args: argparse.Namespace,
    seeds: tuple[int, ...],
    a_per_seed: bool,
) -> dict[str, Any]:
    """``b - a`` per set and for the mean, in points, with a 95% paired bootstrap interval
    and its verdict. ``b`` holds one entry per training seed; so does ``a`` when
    ``a_per_seed`` (another predictor of the same runs), else ``a`` is one run set (the
    floor). Test images and prompt seeds are always paired; training seeds are resampled
    within ``b`` against the floor, and paired (drawn once for both) between two predictors
    of the same runs."""
    from synth.evaluation.paired import paired_bootstrap_mean

    def runs(stats: dict[int, dict[str, list]], cat: str) -> list:
        return [run for s in seeds for run in stats[s][cat]]

    parts = {c: (runs(a, c) if a_per_seed else a[c], runs(b, c)) for c in categories}
    if a_per_seed:  # a run is (training seed, prompt seed) on both sides: draw runs once
        same = [(s, k) for s in seeds for k in args.seeds]
        paired = {"keys_a": same, "keys_b": same}
    else:
        groups = [s for s in seeds for _ in args.seeds]
        keys = [k for _ in seeds for k in args.seeds]
        paired = {"groups_b": groups, "keys_a": list(args.seeds), "keys_b": keys}
    comparison = paired_bootstrap_mean(parts, n_boot=args.boot, seed=0, **paired)
    named = {"mean": comparison, **comparison.parts}
    return {
        where: {
            m: {
                "diff": 100 * c[m].diff,
                "low": 100 * c[m].low,
                "high": 100 * c[m].high,
                "verdict": c[m].verdict,
            }
            for m in VERDICT_METRICS
        }
        for where, c in named.items()
    }


def paired_verdicts(
    floor: dict[str, list],
    trained: dict[int, dict[str, list]],
    categories: list[str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Trained minus floor, per set and for the mean, with a 95% paired bootstrap interval:
    test images resampled per set (the same images for both), training seeds and then prompt
    seeds resampled (a prompt seed picks the same prompt for both). ``pooled`` uses every
    training seed; ``per_seed`` each alone (a recipe should win at every seed)."""

    def compare(seeds: tuple[int, ...]) -> dict[str, Any]:
        return paired_difference(floor, trained, categories, args, seeds, a_per_seed=False)

    return {
        "pooled": compare(tuple(trained)),
        "per_seed": {str(s): compare((s,)) for s in trained} if len(trained) > 1 else {},
    }


def average_verdicts(
    raw: dict[int, dict[str, list]],
    average: dict[int, dict[str, list]],
    categories: list[str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The shipped moving average minus the raw weights of the same runs (``TrainConfig.ema``):
    one training run answers what averaging buys, paired down to the training seed."""
    return paired_difference(raw, average, categories, args, tuple(raw), a_per_seed=True)


def raw_weights(checkpoint: str, device: str, size: tuple[int, int]) -> Any:
    """A predictor of the weights training reached, when the checkpoint ships their moving
    average instead (``synth.train.averaging``); None when it ships the weights themselves,
    or when a reused seed's checkpoint is no longer there."""
    from synth.train.checkpoint import build_model, load_checkpoint
    from synth.train.predictor import ModelPredictor

    if not Path(checkpoint).is_file():
        return None
    state = load_checkpoint(checkpoint)
    if "ema" not in state:
        return None
    model = build_model(state, average=False)
    return ModelPredictor(model, device, size=size)


def format_verdicts(
    verdicts: dict[str, Any],
    categories: list[str],
    args: argparse.Namespace,
    title: str | None = None,
) -> str:
    """Markdown: per set and for the mean, a paired difference (trained minus floor unless
    ``title`` names another) with its interval and verdict."""
    seeds = ",".join(map(str, args.train_seeds))
    title = title or f"paired bootstrap, trained (training seeds {seeds}) minus floor"
    lines = [
        f"{title}, 95% interval over {args.boot} replicates of test images, training seeds "
        "and prompt seeds (binned metrics, within about 0.05 points of the table's):",
        "",
        "| set | " + " | ".join(VERDICT_METRICS) + " |",
        "|---" * (len(VERDICT_METRICS) + 1) + "|",
    ]
    pooled = verdicts["pooled"]
    for where in [*categories, "mean"]:
        cells = [
            f"{d['diff']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}] {d['verdict']}"
            for d in (pooled[where][m] for m in VERDICT_METRICS)
        ]
        name = "**mean**" if where == "mean" else where
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_line(
    verdicts: dict[str, Any],
    versus: dict[str, Any],
    seeds_label: str,
    args: argparse.Namespace,
    steps: int,
    seconds: float,
) -> str:
    """The benchmark's answer in one line: the verdict on mean P-ROC and P-PRO from the
    interval, each training seed's own verdict, and the worst set against the floor."""
    pooled = verdicts["pooled"]["mean"]
    parts = [
        f"{pooled[m]['verdict']} the floor on mean {m} ({pooled[m]['diff']:+.1f} "
        f"[{pooled[m]['low']:+.1f}, {pooled[m]['high']:+.1f}])"
        for m in ("P-ROC", "P-PRO")
    ]
    per_seed = [
        f"seed {s}: {v['mean']['P-ROC']['diff']:+.1f} {v['mean']['P-ROC']['verdict']} / "
        f"{v['mean']['P-PRO']['diff']:+.1f} {v['mean']['P-PRO']['verdict']}"
        for s, v in verdicts["per_seed"].items()
    ]
    worst = versus[seeds_label]["P-ROC"]
    line = (
        f"learning: the trained model {' and '.join(parts)} over training seeds "
        f"{','.join(map(str, args.train_seeds))}"
    )
    if per_seed:
        line += f" (P-ROC / P-PRO {'; '.join(per_seed)})"
    return (
        f"{line}; worst set P-ROC {worst['worst']:+.1f} ({worst['worst_set']}); "
        f"{steps} steps per seed, {seconds / 60:.1f} min in all"
    )


def summary_kinds(manifest: Any) -> list[str]:
    return [k for k, p in manifest.mix.items() if p > 0]


if __name__ == "__main__":
    main()
