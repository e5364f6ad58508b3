"""Checkpoints: tensors and plain data only, written atomically, read with ``weights_only``.

A checkpoint from elsewhere is opened with ``torch.load(..., weights_only=True)``, which refuses
anything but tensors and plain containers, so loading one never runs code. Everything needed to
rebuild the model (its ``ModelConfig``) and to resume exactly (optimizer, scheduler, RNG
states, loader position) is stored as such plain data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from synth.errors import SynthError

FORMAT = "synth-metauas/1"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a crash leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a synth checkpoint onto the CPU without executing any code from it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SynthError(f"{path}: no such checkpoint") from None
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... on foreign files
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [e.__class__.__name__]
        reason = next((ln for ln in lines if "WeightsUnpickler error" in ln), lines[0])
        raise SynthError(
            f"{path}: not a loadable synth checkpoint, only tensors and plain data are accepted "
            f"({reason})"
        ) from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SynthError(f"{path}: not a synth MetaUAS checkpoint (format {FORMAT} expected)")
    return state


def build_model(state: dict[str, Any], average: bool = True):
    """The ``MetaUAS`` a checkpoint ships (weights included; no download, no warning): the
    moving average of the weights when the run kept one (``synth.train.averaging``), else the
    weights training reached. ``average=False`` always loads the weights training reached,
    to compare the two."""
    from synth.model import MetaUAS, ModelConfig

    model = MetaUAS(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["ema"] if average and "ema" in state else state["model"])
    return model
