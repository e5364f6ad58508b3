"""The ``none`` edit: identical prompt and query, so models learn to output nothing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth.edits.base import EditInputs, EditResult, finalize, register_edit


@dataclass(frozen=True)
class NoneParams:
    """``none`` has no parameters; the empty dataclass keeps the registry uniform."""


@register_edit("none", NoneParams)
def none(inputs: EditInputs, rng: np.random.Generator, params: NoneParams) -> EditResult:
    """prompt = query = base image, empty mask."""
    img = inputs.base.image
    return finalize(img.copy(), img.copy(), np.zeros(img.shape[:2], bool))
