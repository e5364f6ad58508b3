"""Learned object-removal backends: a TorchScript or ONNX model with LaMa's calling convention.

The model contract (see ``docs/inpainters.md``)::

    model(image, mask) -> inpainted
    image:     float32 [B, 3, H, W], RGB in [0, 1]
    mask:      float32 [B, 1, H, W], 1 = fill, 0 = keep
    inpainted: float [B, 3, H, W] in [0, 1] (values outside are clamped)

H and W are padded (symmetric reflection, bottom/right) to a multiple of 8, as LaMa's
down/up-sampling needs, and cropped back; with ``input_size`` every image is resized to that
fixed size first (for models traced at one size) and the result resized back. The output is
converted as ``uint8 = round_half_even(clamp(y, 0, 1) * 255)`` and then composited with the
caller's mask, ``out = where(mask, model_out, image)``, so pixels outside the hole are the input
bytes exactly whatever the model does there (the exact-mask rule of ``finalize`` relies on it).

Neither torch nor onnxruntime is imported at module level: a manifest that never names these
backends does not pay for them, and the client only checks that the file exists and looks
right. The model is loaded on first use, once per process (a module-level cache shared by every
copy of the inpainter), and an inpainter pickles as its spec only, so Dask ships a few hundred
bytes to each worker instead of the weights.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import socket
import threading
import warnings
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import cv2
import numpy as np

from synth.errors import ConfigError

#: LaMa's encoder downsamples 3 times, so H and W must be multiples of this.
PAD_MULTIPLE = 8
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
_DOCS = "see docs/inpainters.md"

#: A loaded model: uint8 images [B, H, W, 3] and uint8 {0, 1} masks [B, H, W] -> uint8 images.
Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]

_RUNNERS: dict[tuple[str, str, str], Runner] = {}
_RUNNERS_LOCK = threading.Lock()


class LearnedInpainter(ABC):
    """Shared pre/post-processing, batching, pickling and lazy loading of a model backend.

    Args:
        path: the model file (local path or fsspec URL).
        device: ``"cuda"`` (or ``"cuda:N"``), ``"cpu"``, or ``"auto"`` (CUDA when available).
        batch_size: most images handed to the model in one call by ``inpaint_batch``.
        input_size: fixed model input ``[height, width]`` (or one int for a square), each a
            multiple of 8, for models exported at one size; ``None`` feeds every image at its
            own size padded to a multiple of 8.

    Raises:
        ConfigError: a bad argument, or ``path`` is missing or not a model file of this kind.
    """

    kind: ClassVar[str] = ""

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str = "auto",
        batch_size: int = 8,
        input_size: int | Sequence[int] | None = None,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise ConfigError(f"inpainter.path: expected a model file path, got {path!r}")
        if not isinstance(device, str) or not _DEVICE.fullmatch(device):
            raise ConfigError(
                f"inpainter.device: {device!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N'"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"inpainter.batch_size: must be an integer >= 1, got {batch_size!r}")
        self.path = str(path)
        self.device = device
        self.batch_size = batch_size
        self.input_size = _parse_input_size(input_size)
        self._runner: Runner | None = None
        if "://" not in self.path:
            if not os.path.isfile(self.path):
                raise ConfigError(
                    f"inpainter.path: model file {self.path!r} not found; fix the path"
                )
            self._check_file()

    def spec(self) -> dict[str, Any]:
        """The manifest mapping that recreates this inpainter (what it pickles as)."""
        return {
            "kind": self.kind,
            "path": self.path,
            "device": self.device,
            "batch_size": self.batch_size,
            "input_size": None if self.input_size is None else list(self.input_size),
        }

    def __getstate__(self) -> dict[str, Any]:
        return self.spec()

    def __setstate__(self, state: dict[str, Any]) -> None:
        # No file checks here: a worker that cannot see the file fails at first use, with the
        # path in the message, rather than inside Dask's deserialisation.
        self.path = state["path"]
        self.device = state["device"]
        self.batch_size = state["batch_size"]
        self.input_size = _parse_input_size(state["input_size"])
        self._runner = None

    def __repr__(self) -> str:
        # The base name only: the repr goes into triple info, which must not depend on where
        # the model file happens to live.
        name = posixpath.basename(self.path.replace(os.sep, "/"))
        size = "" if self.input_size is None else f", input_size={list(self.input_size)}"
        return f"{type(self).__name__}(path={name!r}, device={self.device!r}{size})"

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Return a new image with ``mask`` (HxW bool) filled by the model (``Inpainter``)."""
        return self.inpaint_batch([image], [mask])[0]

    def inpaint_batch(
        self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Inpaint many images, ``batch_size`` per model call, for a batched caller.

        Images of different sizes are grouped by their (padded or fixed) model input size;
        images whose mask is empty are returned as copies without running the model. On the
        CPU the bytes equal those of one-at-a-time calls; on a GPU the kernels chosen for a
        batch shape may round differently (seen: one uint8 level in a few hole pixels).

        Args:
            images: HxWx3 uint8 RGB images.
            masks: HxW bool masks, one per image, True where the model must fill.

        Returns:
            New HxWx3 uint8 images, in input order.
        """
        if len(images) != len(masks):
            raise ValueError(f"inpaint_batch: {len(images)} images but {len(masks)} masks")
        outs: list[np.ndarray] = []
        holes: list[np.ndarray] = []
        prepared: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        groups: dict[tuple[int, int], list[int]] = {}
        for k, (image, mask) in enumerate(zip(images, masks, strict=True)):
            image, hole = _check_pair(image, mask, k)
            outs.append(image.copy())
            holes.append(hole)
            if hole.any():
                prepared[k] = self._to_model(image, hole)
                groups.setdefault(prepared[k][0].shape[:2], []).append(k)
        if not groups:
            return outs
        run = self._load()
        for members in groups.values():
            for s in range(0, len(members), self.batch_size):
                chunk = members[s : s + self.batch_size]
                ys = run(
                    np.stack([prepared[k][0] for k in chunk]),
                    np.stack([prepared[k][1] for k in chunk]),
                )
                for k, y in zip(chunk, ys, strict=True):
                    filled = self._from_model(y, outs[k].shape[:2])
                    cv2.copyTo(filled, holes[k].view(np.uint8), outs[k])
        return outs

    def _to_model(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Resize to ``input_size`` (if set) and pad to a multiple of 8; mask as uint8 {0, 1}."""
        m = mask.astype(np.uint8)
        if self.input_size is not None:
            h, w = self.input_size
            shrink = h * w < image.shape[0] * image.shape[1]
            interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            image = cv2.resize(image, (w, h), interpolation=interp)
            # Any overlap with the hole counts, so no hole pixel is left to the model unmasked.
            m = (cv2.resize(m.astype(np.float32), (w, h), interpolation=interp) > 0).view(np.uint8)
        H, W = m.shape
        ph, pw = -H % PAD_MULTIPLE, -W % PAD_MULTIPLE
        if ph or pw:
            image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_REFLECT)
            m = cv2.copyMakeBorder(m, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0)
        return np.ascontiguousarray(image), np.ascontiguousarray(m)

    def _from_model(self, y: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        """Undo ``_to_model`` on one uint8 model output: crop the padding, resize back."""
        H, W = hw
        if self.input_size is None:
            return np.ascontiguousarray(y[:H, :W])
        h, w = self.input_size
        shrink = h * w > H * W
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        return cv2.resize(np.ascontiguousarray(y[:h, :w]), (W, H), interpolation=interp)

    def _load(self) -> Runner:
        """The loaded model, once per process whatever the number of copies of ``self``."""
        if self._runner is None:
            key = (self.kind, self.path, self.device)
            with _RUNNERS_LOCK:
                if key not in _RUNNERS:
                    _RUNNERS[key] = self._make_runner()
                self._runner = _RUNNERS[key]
        return self._runner

    def _read(self) -> bytes | str:
        """The local path, or the bytes of a remote model file."""
        if "://" not in self.path:
            if not os.path.isfile(self.path):
                raise ConfigError(
                    f"inpainter.path: model file {self.path!r} not found on {socket.gethostname()}"
                    "; it must be on storage every worker sees"
                )
            return self.path
        import fsspec

        try:
            with fsspec.open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ConfigError(f"inpainter.path: model file {self.path!r} not found") from None

    def _failed(self, shape: tuple[int, ...], exc: BaseException) -> ConfigError:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        why = lines[-1].rstrip(":") if lines else type(exc).__name__
        return ConfigError(
            f"inpainter.path: model {self.path!r} failed on input {'x'.join(map(str, shape))} "
            f"({why}); it must be model(image, mask) -> image ({_DOCS}); if out of memory, "
            "lower inpainter.batch_size"
        )

    def _check_output(self, shape: tuple[int, ...], want: tuple[int, ...]) -> None:
        if tuple(shape) != tuple(want):
            raise ConfigError(
                f"inpainter.path: model {self.path!r} returned shape {list(shape)} for input "
                f"{list(want)}; it must return the inpainted image Bx3xHxW ({_DOCS})"
            )

    @abstractmethod
    def _check_file(self) -> None:
        """Cheap format check of a local file in the client, without importing the backend."""

    @abstractmethod
    def _make_runner(self) -> Runner:
        """Load the model for ``self.device`` and return the function that runs it."""


class TorchScriptInpainter(LearnedInpainter):
    """A TorchScript model (e.g. an exported LaMa) run under ``torch.inference_mode()``.

    Inputs are cast to the dtype of the model's first floating parameter, so a model exported
    in fp16 gets fp16 tensors; the output is read back as float32.
    """

    kind = "torchscript"

    def _check_file(self) -> None:
        try:
            with zipfile.ZipFile(self.path) as zf:
                names = zf.namelist()
        except (OSError, zipfile.BadZipFile):
            names = []
        if not any(n.endswith("/constants.pkl") for n in names):
            hint = (
                "it looks like a torch.save checkpoint; export the model with torch.jit.trace"
                if any(n.endswith("/data.pkl") for n in names)
                else "it is not a TorchScript archive"
            )
            raise ConfigError(f"inpainter.path: {self.path!r}: {hint} ({_DOCS})")

    def _make_runner(self) -> Runner:
        import torch

        device = self._device(torch)
        source = self._read()
        try:
            with warnings.catch_warnings():
                # TorchScript is deprecated upstream but still the portable LaMa export.
                warnings.filterwarnings("ignore", r".*torch\.jit\.load.*", FutureWarning)
                model = torch.jit.load(
                    source if isinstance(source, str) else io.BytesIO(source), map_location=device
                )
        except (RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"inpainter.path: {self.path!r} is not a loadable TorchScript model ({first})"
            ) from None
        model.eval()
        dtype = next(
            (t.dtype for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()),
            torch.float32,
        )

        def run(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).to(dtype) / 255
                m = torch.from_numpy(masks).to(device).unsqueeze(1).to(dtype)
                try:
                    y = model(x, m)
                except (RuntimeError, torch.jit.Error) as exc:
                    raise self._failed(tuple(x.shape), exc) from None
                if not isinstance(y, torch.Tensor):
                    raise self._failed(tuple(x.shape), TypeError(f"returned {type(y).__name__}"))
                self._check_output(tuple(y.shape), tuple(x.shape))
                y = torch.nan_to_num(y.float(), nan=0.0).clamp_(0, 1).mul_(255).round_()
                return y.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()

        return run

    def _device(self, torch: Any) -> Any:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ConfigError(
                    f"inpainter.device: {self.device!r} but CUDA is not available to torch "
                    f"{torch.__version__} on {socket.gethostname()}; run on GPU workers or set "
                    "inpainter.device to 'auto' or 'cpu'"
                )
            dev = torch.device(self.device)
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise ConfigError(
                    f"inpainter.device: {self.device!r} but only {torch.cuda.device_count()} "
                    f"CUDA device(s) are visible on {socket.gethostname()}"
                )
            return dev
        return torch.device("cpu")


class OnnxInpainter(LearnedInpainter):
    """An ONNX model run with onnxruntime (CUDA provider when asked and available).

    The first two model inputs are (image, mask), or the inputs named ``image`` and ``mask``
    when the model has them; the first output is the inpainted image. Inputs are fed in the
    model's declared float type (float32 or float16).
    """

    kind = "onnx"

    def _check_file(self) -> None:
        with open(self.path, "rb") as f:
            head = f.read(4)
        if not head:
            raise ConfigError(f"inpainter.path: {self.path!r} is empty, not an ONNX model")
        if head == b"PK\x03\x04":
            raise ConfigError(
                f"inpainter.path: {self.path!r} is a zip archive (TorchScript or torch.save), "
                "not an ONNX model; use kind: torchscript for TorchScript files"
            )

    def _make_runner(self) -> Runner:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError(
                "inpainter.kind: 'onnx' needs onnxruntime (pip install onnxruntime, or "
                "onnxruntime-gpu for CUDA)"
            ) from None
        providers = self._providers(ort)
        source = self._read()
        try:
            sess = ort.InferenceSession(source, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"inpainter.path: {self.path!r} is not a loadable ONNX model ({first})"
            ) from None
        inputs = sess.get_inputs()
        if len(inputs) < 2:
            raise ConfigError(
                f"inpainter.path: ONNX model {self.path!r} has {len(inputs)} input(s); "
                f"it must take (image, mask) ({_DOCS})"
            )
        by_name = {i.name: i for i in inputs}
        image_in, mask_in = (
            (by_name["image"], by_name["mask"])
            if {"image", "mask"} <= set(by_name)
            else (inputs[0], inputs[1])
        )
        out_name = sess.get_outputs()[0].name

        def dtype_of(arg: Any) -> type:
            return np.float16 if arg.type == "tensor(float16)" else np.float32

        def run(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
            x = images.transpose(0, 3, 1, 2).astype(np.float32) / 255
            m = masks[:, None]
            feeds = {
                image_in.name: x.astype(dtype_of(image_in)),
                mask_in.name: m.astype(dtype_of(mask_in)),
            }
            try:
                (y,) = sess.run([out_name], feeds)
            except Exception as exc:  # onnxruntime raises its own exception types
                raise self._failed(x.shape, exc) from None
            self._check_output(np.shape(y), x.shape)
            y = np.nan_to_num(np.asarray(y, np.float32), nan=0.0)
            y = np.rint(np.clip(y, 0, 1) * 255).astype(np.uint8)
            return np.ascontiguousarray(y.transpose(0, 2, 3, 1))

        return run

    def _providers(self, ort: Any) -> list[Any]:
        available = ort.get_available_providers()
        has_cuda = "CUDAExecutionProvider" in available
        if self.device == "auto":
            return (
                ["CUDAExecutionProvider", "CPUExecutionProvider"]
                if has_cuda
                else ["CPUExecutionProvider"]
            )
        if self.device.startswith("cuda"):
            if not has_cuda:
                raise ConfigError(
                    f"inpainter.device: {self.device!r} but onnxruntime {ort.__version__} on "
                    f"{socket.gethostname()} has no CUDAExecutionProvider (install "
                    "onnxruntime-gpu); or set inpainter.device to 'auto' or 'cpu'"
                )
            index = int(self.device.partition(":")[2] or 0)
            return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]


def _parse_input_size(value: int | Sequence[int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    hw = [value, value] if isinstance(value, int) and not isinstance(value, bool) else value
    ok = (
        isinstance(hw, (list, tuple))
        and len(hw) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in hw)
        and all(v % PAD_MULTIPLE == 0 for v in hw)
    )
    if not ok:
        raise ConfigError(
            f"inpainter.input_size: {value!r} must be an int or [height, width], positive "
            f"multiples of {PAD_MULTIPLE}"
        )
    return int(hw[0]), int(hw[1])


def _check_pair(image: np.ndarray, mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    image, mask = np.asarray(image), np.asarray(mask)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"inpaint: image {k} is {image.shape} {image.dtype}, not HxWx3 uint8")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"inpaint: mask {k} is {mask.shape}, image is {image.shape[:2]}")
    return image, np.ascontiguousarray(mask, dtype=bool)
