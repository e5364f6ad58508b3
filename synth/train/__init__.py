"""The bundled MetaUAS trainer: store loader, GPU augmentation, loop, checkpoints, predictor.

torch is imported lazily: ``import synth.train`` stays cheap and only the names used pull in
their modules.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "TrainConfig": "synth.train.config",
    "AugConfig": "synth.train.config",
    "train": "synth.train.loop",
    "launch": "synth.train.loop",
    "TrainResult": "synth.train.loop",
    "ModelPredictor": "synth.train.predictor",
    "predict_files": "synth.train.predict",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'synth.train' has no attribute {name!r}")
