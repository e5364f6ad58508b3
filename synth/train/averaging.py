"""The moving average of the weights: the model a run ships when ``TrainConfig.ema`` is set.

Why: with a small batch on a small store, the weights the last optimizer steps land on
depend on the training seed about as much as on the data, and one real set can move by
several points between two seeds of the same recipe (``docs/learning.md``). The exponential
moving average of the weights over the last few hundred steps (Polyak averaging, as in timm's
``ModelEma`` and most detection and diffusion trainers) is a steadier point of the same run.
The trainer keeps the raw weights to resume from and saves the average as the model that
validation, ``synth eval`` and ``synth predict`` load. torch's ``AveragedModel`` does the
arithmetic; this module only fixes how synth uses it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def weight_average(model: torch.nn.Module, decay: float) -> AveragedModel:
    """A moving average of ``model``'s parameters and buffers (BatchNorm statistics
    included) with the given decay; the first update copies the weights."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def average_state(average: AveragedModel) -> dict[str, Any]:
    """The checkpoint entries of ``average``: the averaged weights, loadable into the bare
    model, and how many updates they hold (to resume exactly)."""
    return {"ema": average.module.state_dict(), "ema_updates": int(average.n_averaged)}


def restore_average(average: AveragedModel, state: dict[str, Any]) -> None:
    """Load what ``average_state`` saved into ``average``."""
    average.module.load_state_dict(state["ema"])
    average.n_averaged.fill_(state["ema_updates"])
