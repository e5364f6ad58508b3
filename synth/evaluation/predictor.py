"""What the evaluation needs from a model, and how ``synth eval`` obtains one.

The protocol talks to any object with this shape, so the metrics and readers are tested with
a tiny deterministic stand-in, and the trainer's model plugs in without the evaluation
importing torch.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Predictor(Protocol):
    """A one-prompt anomaly segmenter.

    Attributes:
        size: (H, W) the model expects; the protocol resizes images to it.
    """

    size: tuple[int, int]

    def predict(self, prompts: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """Anomaly maps of queries against their prompts.

        Args:
            prompts: uint8 (B, H, W, 3) RGB normal images.
            queries: uint8 (B, H, W, 3) RGB, same B.

        Returns:
            float32 (B, H, W), higher = more anomalous.
        """
        ...

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Global features for nearest-prompt retrieval: uint8 (B, H, W, 3) -> float32 (B, D)."""
        ...


def load_predictor(
    checkpoint: str, device: str = "auto", size: tuple[int, int] | None = None
) -> Predictor:
    """Load the trainer's model from a checkpoint (torch is imported only here).

    ``size`` makes the model run at that input size instead of its training size.
    """
    from synth.train.predictor import ModelPredictor

    return ModelPredictor.from_checkpoint(checkpoint, device=device, size=size)


#: Training-free reference predictors ``synth eval --baseline`` knows.
BASELINES = ("feature-distance",)


def load_baseline(
    name: str,
    encoder: str,
    weights: str = "auto",
    size: int = 256,
    levels: tuple[int, ...] | None = None,
    device: str = "auto",
) -> Predictor:
    """A training-free predictor (``feature-distance``: ``synth.model.feature_distance``)."""
    from synth.errors import ConfigError
    from synth.train.predictor import ModelPredictor

    if name not in BASELINES:
        raise ConfigError(f"--baseline {name!r}: use one of {', '.join(BASELINES)}")
    return ModelPredictor.feature_distance(encoder, weights, size, levels, device)


class SelectWith:
    """A predictor whose ``embed`` (nearest-prompt retrieval) comes from another model.

    The paper picks MetaUAS* prompts with EfficientNet-b4 features whatever the segmenter;
    this lets any checkpoint or baseline use a chosen pretrained encoder for that choice.
    """

    def __init__(self, predictor: Predictor, embedder: Predictor) -> None:
        self.predictor, self.embedder = predictor, embedder
        self.size = predictor.size

    def predict(self, prompts: np.ndarray, queries: np.ndarray) -> np.ndarray:
        return self.predictor.predict(prompts, queries)

    def embed(self, images: np.ndarray) -> np.ndarray:
        return self.embedder.embed(images)
