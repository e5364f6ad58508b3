"""Training-time augmentation of whole batches on the device (GPU), after the uint8 upload.

Parameters are sampled first (``sample_params``) and then applied deterministically
(``apply_params``), so a test or a debugging session can replay them. In order:

1. **role swap** (per sample, only for allowed kinds): prompt and query exchange places, so an
   appearance becomes a disappearance. Synth masks are exactly the pixels where the two images
   differ, with no geometry baked in, so the mask is unchanged for every kind.
2. **shared dihedral transform**: one random horizontal flip, vertical flip and transpose
   (square inputs) applied to prompt, query and mask alike.
3. **surface pairs** (optional, ``surface_pairs``): a sample drawn on a surface (a ``plain``
   source such as a texture photo) whose prompt is the untouched base after the role swap
   (every change is then in the query) takes its prompt and its query from two different
   windows of the base, each scaled back to the full size. Outside the edit the two views
   then differ as two instances of one surface do (two tiles, two sheets of fabric), not pixel
   for pixel, and the mask, cut from the query's window, still marks only the edit. The
   query's window is centred on a random pixel of the edit.
4. **prompt misalignment**: only the *prompt* is warped (rotation, translation, scale, optional
   perspective and an optional smooth local flow), never the query or the mask: the mask stays
   in query coordinates and the model must learn that misregistration is not a change. Outside
   the source the warp reflects.
5. **photometric jitter**: brightness, contrast, saturation and hue, drawn per view, so colour
   differences between prompt and query are also nuisances.
6. **grayscale** (per sample, optional): prompt and query both lose their colour, as in the
   grayscale categories of real anomaly sets (magnetic tile, MVTec grid, screw, zipper) that
   a model trained on colour photos has never seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812

from synth.train.config import AugConfig

_RGB2YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64
)
_CONSTANTS = {
    "rgb2yiq": _RGB2YIQ.float(),
    "yiq2rgb": torch.linalg.inv(_RGB2YIQ).float(),
    "gray": torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1),
    "corners": torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]),
}
_DEVICE_CONSTANTS: dict[tuple[str, torch.device], torch.Tensor] = {}
#: Border (normalised units, a 32nd of the size) also dropped by ``unseen``: features near
#: the frame's edge see padding, so content just inside it matches poorly too.
UNSEEN_MARGIN = 1 / 16
#: Side of a surface pair's windows, as a fraction of the view's side: two halves of a
#: texture photo overlap by chance, but mostly show different parts of the surface.
SURFACE_WINDOW = 0.5
#: Control points per side of the elastic flow: 4 gives blobs of about a third of the image
#: that move against each other.
ELASTIC_LATTICE = 4


def _const(name: str, device: torch.device) -> torch.Tensor:
    """A constant on ``device``, copied there once: per-step host-to-device copies would stall
    the CUDA stream (pageable copies synchronise)."""
    key = (name, device)
    if key not in _DEVICE_CONSTANTS:
        _DEVICE_CONSTANTS[key] = _CONSTANTS[name].to(device)
    return _DEVICE_CONSTANTS[key]


@dataclass
class AugParams:
    """Sampled parameters of one batch (all tensors on the batch's device).

    Attributes:
        swap: (B,) exchange prompt and query.
        hflip, vflip, transpose: (B,) the shared dihedral transform.
        warp: (B, 3, 3) homography taking prompt coordinates to query coordinates, in
            normalised [-1, 1] image coordinates (identity where the prompt is not warped).
        flow: (B, 2, k, k) displacement (normalised units) added to the prompt's sampling grid,
            upsampled bicubically from a k x k lattice; None without ``elastic``.
        color: (2, B, 4) brightness, contrast, saturation factors and hue shift (fraction of the
            hue circle) of the prompt [0] and the query [1].
        gray: (B,) turn both views to grayscale; None without ``gray``.
        surface: (B,) take prompt and query from two windows of a surface (surface pairs);
            None without ``surface_pairs``.
        windows: (B, 4) uniform draws that place the two windows (``surface_windows``).
    """

    swap: torch.Tensor
    hflip: torch.Tensor
    vflip: torch.Tensor
    transpose: torch.Tensor
    warp: torch.Tensor
    color: torch.Tensor
    flow: torch.Tensor | None = None
    gray: torch.Tensor | None = None
    surface: torch.Tensor | None = None
    windows: torch.Tensor | None = None


def batch_to_float(
    batch: dict[str, torch.Tensor], size: int, channels_last: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 (B, H, W, 3) prompt/query and (B, H, W) mask -> float (B, C, size, size) in [0, 1]."""
    memory = torch.channels_last if channels_last else torch.contiguous_format
    prompt = batch["prompt"].permute(0, 3, 1, 2).float().div_(255)
    query = batch["query"].permute(0, 3, 1, 2).float().div_(255)
    mask = batch["mask"].unsqueeze(1).float()
    if prompt.shape[-2:] != (size, size):
        prompt = F.interpolate(prompt, (size, size), mode="bilinear", antialias=True)
        query = F.interpolate(query, (size, size), mode="bilinear", antialias=True)
        mask = F.interpolate(mask, (size, size), mode="nearest")
    return (
        prompt.contiguous(memory_format=memory),
        query.contiguous(memory_format=memory),
        mask.contiguous(memory_format=memory),
    )


def _uniform(
    n: int, lo: float, hi: float, g: torch.Generator, device: torch.device
) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def homography_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) homographies mapping 4 points ``src`` (B, 4, 2) onto ``dst`` (B, 4, 2)."""
    B = src.shape[0]
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], dim=-1)
    A = torch.cat([rows_u, rows_v], dim=1)
    b = torch.cat([u, v], dim=1).unsqueeze(-1)
    h = torch.linalg.solve_ex(A, b)[0].squeeze(-1)  # _ex: no error check, no device sync
    return torch.cat([h, torch.ones(B, 1, device=src.device, dtype=src.dtype)], dim=1).view(B, 3, 3)


def sample_params(
    n: int,
    cfg: AugConfig,
    kinds: torch.Tensor,
    swap_allowed: torch.Tensor,
    generator: torch.Generator,
    misalign_allowed: torch.Tensor | None = None,
    surface: torch.Tensor | None = None,
    base_prompt: torch.Tensor | None = None,
) -> AugParams:
    """Draw the augmentation of ``n`` samples from ``generator`` (on the batch's device).

    Args:
        n: batch size.
        cfg: strengths and probabilities.
        kinds: (B,) int64 edit kind of each sample (index into the store's ``kinds``).
        swap_allowed: (K,) bool, whether the role swap is valid for each kind.
        generator: device generator; its state is checkpointed, so resumes replay exactly.
        misalign_allowed: (K,) bool, whether a kind's prompt may be warped (``None``: every
            kind). Applied after the draws, so the random stream is the same either way.
        surface: (B,) bool, whether a sample was drawn on a surface (the loader's
            ``surface``); ``None``: none was.
        base_prompt: (K,) bool, whether a kind's prompt is its untouched base (the edit
            registry's ``prompt_is_base``); ``None``: every kind's is. A surface pair needs the
            base as its prompt, after the role swap.
    """
    g, dev = generator, generator.device

    def coin(p: float) -> torch.Tensor:
        return torch.rand(n, generator=g, device=dev) < p

    K = len(swap_allowed)
    known = (kinds >= 0) & (kinds < K)  # unset kinds (-1) never swap
    swap = coin(cfg.swap_p) & swap_allowed[kinds.clamp(0, K - 1)] & known
    flip = 0.5 if cfg.flip else 0.0
    hflip, vflip, transpose = coin(flip), coin(flip), coin(flip)

    theta = _uniform(n, -cfg.rotate, cfg.rotate, g, dev) * (math.pi / 180)
    lo, hi = cfg.scale
    scale = torch.exp(_uniform(n, math.log(lo), math.log(hi), g, dev))
    shift = _uniform(2 * n, -2 * cfg.translate, 2 * cfg.translate, g, dev).view(n, 2)
    affine = torch.zeros(n, 3, 3, device=dev)
    affine[:, 0, 0] = scale * torch.cos(theta)
    affine[:, 0, 1] = -scale * torch.sin(theta)
    affine[:, 1, 0] = scale * torch.sin(theta)
    affine[:, 1, 1] = scale * torch.cos(theta)
    affine[:, :2, 2] = shift
    affine[:, 2, 2] = 1
    corners = _const("corners", dev).expand(n, 4, 2)
    jiggle = _uniform(8 * n, -2 * cfg.perspective, 2 * cfg.perspective, g, dev).view(n, 4, 2)
    warp = homography_from_points(corners, corners + jiggle) @ affine
    warped = coin(cfg.misalign_p)
    if misalign_allowed is not None:
        warped &= misalign_allowed[kinds.clamp(0, K - 1)] & known
    warp = torch.where(warped.view(n, 1, 1), warp, torch.eye(3, device=dev).expand(n, 3, 3))

    j = cfg.jitter
    color = torch.stack(
        [
            torch.stack(
                [
                    _uniform(n, 1 - j, 1 + j, g, dev),
                    _uniform(n, 1 - j, 1 + j, g, dev),
                    _uniform(n, 1 - j, 1 + j, g, dev),
                    _uniform(n, -j, j, g, dev),
                ],
                dim=-1,
            )
            for _ in range(2)
        ]
    )
    flow = None
    if cfg.elastic > 0:  # drawn last, and only when asked: other settings replay as before
        k = ELASTIC_LATTICE
        flow = _uniform(2 * k * k * n, -2 * cfg.elastic, 2 * cfg.elastic, g, dev).view(n, 2, k, k)
        flow = flow * warped.view(n, 1, 1, 1)
    gray = coin(cfg.gray) if cfg.gray > 0 else None  # drawn last too, for the same reason
    pairs = windows = None
    if cfg.surface_pairs > 0:  # and these after it
        on_surface = surface if surface is not None else torch.zeros_like(known)
        pairs = coin(cfg.surface_pairs) & on_surface
        prompt_base = base_prompt[kinds.clamp(0, K - 1)] if base_prompt is not None else known
        pairs &= known & (prompt_base ^ swap)  # the change must be in the query's view
        windows = torch.rand(n, 4, generator=g, device=dev)
    return AugParams(swap, hflip, vflip, transpose, warp, color, flow, gray, pairs, windows)


def _select(cond: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(cond.view(-1, 1, 1, 1), a, b)


def warp_images(
    images: torch.Tensor, warp: torch.Tensor, flow: torch.Tensor | None = None
) -> torch.Tensor:
    """Warp (B, C, H, W) by homographies (B, 3, 3) in normalised coordinates (source -> output),
    then displace the sampling grid by ``flow`` (B, 2, k, k) upsampled to (H, W)."""
    B, _, H, W = images.shape
    dev = images.device
    ys = (torch.arange(H, device=dev, dtype=torch.float32) * 2 + 1) / H - 1
    xs = (torch.arange(W, device=dev, dtype=torch.float32) * 2 + 1) / W - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    out = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).view(1, H * W, 3)
    src = out @ torch.linalg.inv_ex(warp)[0].transpose(1, 2)
    grid = (src[..., :2] / src[..., 2:].clamp(min=1e-6)).view(B, H, W, 2)
    if flow is not None:
        dense = F.interpolate(flow, (H, W), mode="bicubic", align_corners=True)
        grid = grid + dense.permute(0, 2, 3, 1)
    warped = F.grid_sample(
        images.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    return warped.to(images.dtype)


def surface_windows(
    prompt: torch.Tensor,
    query: torch.Tensor,
    mask: torch.Tensor,
    pick: torch.Tensor,
    draws: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Surface pairs: for the samples in ``pick`` (B,), the prompt from one window and the
    query and mask from another (side ``SURFACE_WINDOW`` of the view's), both scaled back to
    the view's size. ``draws`` (B, 4) in [0, 1) place them: the prompt's top-left corner, and
    the edit pixel the query's window is centred on (a uniform corner when the mask is empty).
    """
    H, W = prompt.shape[-2:]
    h, w = max(1, round(H * SURFACE_WINDOW)), max(1, round(W * SURFACE_WINDOW))
    chosen = pick.nonzero().flatten().tolist()
    if not chosen:
        return prompt, query, mask
    prompt, query, mask = prompt.clone(), query.clone(), mask.clone()
    u = draws.double().cpu().tolist()

    def resized(x: torch.Tensor, y: int, x0: int, mode: str) -> torch.Tensor:
        return F.interpolate(x[None, :, y : y + h, x0 : x0 + w], (H, W), mode=mode)[0]

    for i in chosen:
        py, px = int(u[i][0] * (H - h + 1)), int(u[i][1] * (W - w + 1))
        ys, xs = mask[i, 0].nonzero(as_tuple=True)
        if len(ys):
            k = min(int(u[i][2] * len(ys)), len(ys) - 1)
            qy = min(max(int(ys[k]) - h // 2, 0), H - h)
            qx = min(max(int(xs[k]) - w // 2, 0), W - w)
        else:
            qy, qx = int(u[i][2] * (H - h + 1)), int(u[i][3] * (W - w + 1))
        prompt[i] = resized(prompt[i], py, px, "bilinear")
        query[i] = resized(query[i], qy, qx, "bilinear")
        mask[i] = resized(mask[i], qy, qx, "nearest")
    return prompt, query, mask


def _luma(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) luma, BT.601 weights."""
    return (images * _const("gray", images.device)).sum(1, keepdim=True)


def color_jitter(images: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
    """Per-sample brightness, contrast, saturation, hue (``color`` (B, 4)) of [0, 1] RGB images."""
    b, c, s = (color[:, i].view(-1, 1, 1, 1) for i in range(3))
    x = images * b
    mean = _luma(x).mean(dim=(2, 3), keepdim=True)
    x = (x - mean) * c + mean
    gray = _luma(x)
    x = (x - gray) * s + gray
    # Hue: rotate the chroma plane of YIQ by 2*pi*h.
    angle = color[:, 3] * (2 * math.pi)
    rot = torch.zeros(len(angle), 3, 3, device=images.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1] = rot[:, 2, 2] = torch.cos(angle)
    rot[:, 1, 2], rot[:, 2, 1] = -torch.sin(angle), torch.sin(angle)
    m = _const("yiq2rgb", images.device) @ rot @ _const("rgb2yiq", images.device)
    x = torch.einsum("bij,bjhw->bihw", m, x)
    return x.clamp_(0, 1).contiguous(memory_format=torch.channels_last)


def to_gray(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> the same shape with every channel the luma (BT.601 weights)."""
    return _luma(images).expand_as(images).contiguous(memory_format=torch.channels_last)


def apply_params(
    prompt: torch.Tensor, query: torch.Tensor, mask: torch.Tensor, params: AugParams
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply ``params`` to float prompt/query (B, 3, H, W) and mask (B, 1, H, W)."""
    prompt, query = _select(params.swap, query, prompt), _select(params.swap, prompt, query)
    square = prompt.shape[-1] == prompt.shape[-2]
    out = []
    for x in (prompt, query, mask):
        x = _select(params.hflip, x.flip(-1), x)
        x = _select(params.vflip, x.flip(-2), x)
        if square:
            x = _select(params.transpose, x.transpose(-1, -2), x)
        out.append(x)
    prompt, query, mask = out
    if params.surface is not None:
        prompt, query, mask = surface_windows(prompt, query, mask, params.surface, params.windows)
    prompt = warp_images(prompt, params.warp, params.flow)
    prompt = color_jitter(prompt, params.color[0])
    query = color_jitter(query, params.color[1])
    if params.gray is not None:
        prompt, query = (_select(params.gray, to_gray(x), x) for x in (prompt, query))
    return prompt, query, mask.contiguous(memory_format=torch.channels_last)


def unseen(params: AugParams, size: tuple[int, int], margin: float) -> torch.Tensor:
    """(B, 1, H, W) bool: query pixels whose content the warped prompt does not show.

    Only warped samples have any. A query pixel at x shows what the aligned prompt showed at
    x, which the warp moves to ``warp(x)``; where that falls outside the frame (or within
    ``margin`` of its edge, in normalised units, to cover the local flow and the encoder's
    border effects) the query holds content with no counterpart in the prompt. No mask marks
    it, so a loss that counted it as "unchanged" would teach that new content is no change.
    """
    H, W = size
    dev = params.warp.device
    ys = (torch.arange(H, device=dev, dtype=torch.float32) * 2 + 1) / H - 1
    xs = (torch.arange(W, device=dev, dtype=torch.float32) * 2 + 1) / W - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).view(1, H * W, 3)
    moved = pts @ params.warp.transpose(1, 2)
    xy = moved[..., :2] / moved[..., 2:].clamp(min=1e-6)
    outside = (xy.abs() > 1 - margin).any(dim=-1) | (moved[..., 2] <= 1e-6)
    eye = torch.eye(3, device=dev)
    warped = (params.warp - eye).abs().flatten(1).amax(dim=1) > 0
    return (outside & warped.view(-1, 1)).view(-1, 1, H, W)


def augment(
    prompt: torch.Tensor,
    query: torch.Tensor,
    mask: torch.Tensor,
    kinds: torch.Tensor,
    cfg: AugConfig,
    swap_allowed: torch.Tensor,
    generator: torch.Generator,
    misalign_allowed: torch.Tensor | None = None,
    surface: torch.Tensor | None = None,
    base_prompt: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample and apply one batch's augmentation (see the module docstring); the fourth
    tensor is the loss weight of each pixel: 0 where ``cfg.ignore_unseen`` drops content the
    warped prompt does not show (``unseen``), else 1. ``surface`` and ``base_prompt``: see
    ``sample_params`` (for ``cfg.surface_pairs``)."""
    params = sample_params(
        prompt.shape[0],
        cfg,
        kinds,
        swap_allowed,
        generator,
        misalign_allowed,
        surface,
        base_prompt,
    )
    prompt, query, mask = apply_params(prompt, query, mask, params)
    weight = torch.ones_like(mask)
    if cfg.ignore_unseen:
        margin = 2 * cfg.elastic + UNSEEN_MARGIN
        weight = weight.masked_fill(unseen(params, tuple(mask.shape[-2:]), margin), 0.0)
    return prompt, query, mask, weight
