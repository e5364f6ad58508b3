"""The edit registry: importing this package registers every edit kind.

>>> "none" in list_edits()
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synth.edits import identity, local, objects  # noqa: F401  (registration side effects)
from synth.edits.base import (
    DIFF_TOL,
    EDITS,
    EditDef,
    EditInputs,
    EditResult,
    Inpainter,
    changed_pixels,
    finalize,
    make_params,
    register_edit,
)
from synth.edits.inpaint import OpenCVInpainter, create_inpainter

__all__ = [
    "DIFF_TOL",
    "EDITS",
    "EditDef",
    "EditInputs",
    "EditResult",
    "Inpainter",
    "OpenCVInpainter",
    "apply_edit",
    "changed_pixels",
    "create_inpainter",
    "finalize",
    "list_edits",
    "make_params",
    "register_edit",
]


def list_edits() -> list[str]:
    """Names of all registered edit kinds, sorted."""
    return sorted(EDITS)


def apply_edit(
    name: str,
    inputs: EditInputs,
    rng: np.random.Generator,
    overrides: dict[str, Any] | None = None,
) -> EditResult:
    """Run edit ``name`` with params built from ``overrides`` (unknown keys: ConfigError)."""
    return EDITS[name].fn(inputs, rng, make_params(name, overrides))
