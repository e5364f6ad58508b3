"""GPU batch augmentation: the mask stays aligned with the query; only the prompt is warped."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F  # noqa: N812

from synth.train.augment import (
    AugParams,
    apply_params,
    augment,
    batch_to_float,
    color_jitter,
    homography_from_points,
    sample_params,
    surface_windows,
    warp_images,
)
from synth.train.config import AugConfig


def _pattern_batch(n: int = 16, size: int = 32, seed: int = 0):
    """Prompt: smooth gradient; query: prompt + one asymmetric bright L-shape; mask: the L."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    base = torch.stack([xs * 4, ys * 4, (xs + ys) * 2], dim=-1).to(torch.uint8)
    prompt = base.expand(n, size, size, 3).clone()
    query = prompt.clone()
    mask = torch.zeros(n, size, size, dtype=torch.uint8)
    for i in range(n):
        y, x = torch.randint(2, size - 10, (2,), generator=g).tolist()
        mask[i, y : y + 8, x : x + 2] = 1
        mask[i, y + 6 : y + 8, x : x + 6] = 1
    query[mask.bool()] = 255
    kinds = torch.arange(n) % 3
    return {"prompt": prompt, "query": query, "mask": mask, "kind": kinds}


def test_mask_equals_prompt_query_difference_after_swap_and_flips():
    batch = _pattern_batch()
    p, q, m = batch_to_float(batch, 32)
    cfg = AugConfig(misalign_p=0.0, jitter=0.0, swap_p=0.5, flip=True)
    allowed = torch.tensor([True, True, False])
    params = sample_params(16, cfg, batch["kind"], allowed, torch.Generator().manual_seed(1))
    assert params.swap.any() and not params.swap[batch["kind"] == 2].any()
    assert params.hflip.any() and params.transpose.any()
    p2, q2, m2 = apply_params(p, q, m, params)
    diff = ((p2 - q2).abs().amax(1, keepdim=True) > 1e-3).float()
    assert torch.equal(diff, m2)
    # Swapped samples: the pattern is now in the prompt (a disappearance), same mask.
    s = int(params.swap.nonzero()[0])
    assert (p2[s, 0][m2[s, 0] > 0] > 1 - 1e-4).all()


def _expected_position(warp: torch.Tensor, y: int, x: int, size: int) -> tuple[float, float]:
    u = torch.tensor([(2 * x + 1) / size - 1, (2 * y + 1) / size - 1, 1.0])
    v = warp @ u
    v = v[:2] / v[2]
    return float((v[1] + 1) * size / 2 - 0.5), float((v[0] + 1) * size / 2 - 0.5)


def test_warp_moves_a_known_dot_where_the_homography_says():
    size = 64
    img = torch.zeros(8, 1, size, size)
    img[:, :, 29:32, 33:36] = 1.0  # a 3x3 dot centred at (30, 34)
    cfg = AugConfig(misalign_p=1.0, rotate=30, translate=0.1, scale=(0.9, 1.2), perspective=0.05)
    params = sample_params(
        8,
        cfg,
        torch.zeros(8, dtype=torch.long),
        torch.ones(1, dtype=torch.bool),
        torch.Generator().manual_seed(3),
    )
    assert not torch.allclose(params.warp, torch.eye(3).expand(8, 3, 3))
    out = warp_images(img, params.warp)
    ys, xs = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    for i in range(8):
        w = out[i, 0]
        cy, cx = float((w * ys).sum() / w.sum()), float((w * xs).sum() / w.sum())
        ey, ex = _expected_position(params.warp[i], 30, 34, size)
        assert abs(cy - ey) < 1.0 and abs(cx - ex) < 1.0, (i, cy, cx, ey, ex)


def test_only_the_prompt_is_warped():
    batch = _pattern_batch()
    p, q, m = batch_to_float(batch, 32)
    cfg = AugConfig(misalign_p=1.0, jitter=0.0, swap_p=0.0, flip=True)
    params = sample_params(
        16, cfg, batch["kind"], torch.ones(3, dtype=torch.bool), torch.Generator().manual_seed(4)
    )
    still = dataclasses.replace(params, warp=torch.eye(3).expand(16, 3, 3))
    p_w, q_w, m_w = apply_params(p, q, m, params)
    p_s, q_s, m_s = apply_params(p, q, m, still)
    assert torch.equal(q_w, q_s) and torch.equal(m_w, m_s)
    assert not torch.allclose(p_w, p_s)
    # The mask still marks exactly the pattern in the query.
    assert torch.equal(((q_w > 1 - 1e-4).all(1, keepdim=True)).float(), m_w)


def test_identity_warp_and_jitter_change_nothing():
    x = torch.rand(4, 3, 16, 16)
    assert torch.allclose(warp_images(x, torch.eye(3).expand(4, 3, 3)), x, atol=1e-5)
    neutral = torch.tensor([[1.0, 1.0, 1.0, 0.0]]).expand(4, 4)
    assert torch.allclose(color_jitter(x, neutral), x, atol=1e-5)
    strong = torch.tensor([[1.1, 0.9, 1.1, 0.1]]).expand(4, 4)
    y = color_jitter(x, strong)
    assert y.min() >= 0 and y.max() <= 1 and not torch.allclose(y, x)


def test_homography_from_points_recovers_a_known_one():
    H = torch.tensor([[1.1, 0.1, 0.05], [-0.05, 0.95, 0.1], [0.02, -0.03, 1.0]])
    src = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    dst = torch.cat([src, torch.ones(4, 1)], 1) @ H.T
    dst = dst[:, :2] / dst[:, 2:]
    assert torch.allclose(homography_from_points(src[None], dst[None])[0], H, atol=1e-5)


def test_augment_is_replayable_from_the_generator_state():
    batch = _pattern_batch(8)
    p, q, m = batch_to_float(batch, 32)
    g = torch.Generator().manual_seed(9)
    state = g.get_state()
    allowed = torch.ones(3, dtype=torch.bool)
    a = augment(p, q, m, batch["kind"], AugConfig(perspective=0.1), allowed, g)
    g.set_state(state)
    b = augment(p, q, m, batch["kind"], AugConfig(perspective=0.1), allowed, g)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_elastic_flow_moves_parts_of_the_prompt_against_each_other():
    """The flow displaces the prompt by different amounts in different places (a homography
    cannot), leaves query and mask alone, and without ``elastic`` nothing is drawn for it, so
    existing settings replay the same augmentation."""
    batch = _pattern_batch(n=8, size=64)
    p, q, m = batch_to_float(batch, 64)
    kinds, allowed = batch["kind"], torch.ones(3, dtype=torch.bool)
    plain = AugConfig(
        misalign_p=1.0,
        rotate=0.0,
        translate=0.0,
        scale=(1.0, 1.0),
        jitter=0.0,
        swap_p=0.0,
        flip=False,
        elastic=0.0,
    )
    elastic = dataclasses.replace(plain, elastic=0.1)
    a = sample_params(8, plain, kinds, allowed, torch.Generator().manual_seed(3))
    b = sample_params(8, elastic, kinds, allowed, torch.Generator().manual_seed(3))
    assert a.flow is None and b.flow is not None and b.flow.shape == (8, 2, 4, 4)
    assert torch.equal(a.warp, b.warp) and torch.equal(a.color, b.color)
    assert b.flow.abs().max() <= 0.2 + 1e-6  # 0.1 of the size = 0.2 normalised units
    p1, q1, m1 = apply_params(p, q, m, a)
    p2, q2, m2 = apply_params(p, q, m, b)
    assert torch.allclose(p1, p, atol=1e-5)  # identity warp, no flow
    assert torch.equal(q2, q1) and torch.equal(m2, m1)
    # the prompt is a gradient in x (red) and y (green): the local shift is readable from it
    shift = (p2[:, 0] - p[:, 0]) * 255 / 4  # pixels along x
    per_image_spread = shift[:, 8:-8, 8:-8].flatten(1)
    assert (per_image_spread.amax(1) - per_image_spread.amin(1) > 2).all()


def test_gray_turns_both_views_of_chosen_samples_to_luma_and_draws_nothing_when_off():
    batch = _pattern_batch(n=16, size=32)
    p, q, m = batch_to_float(batch, 32)
    kinds, allowed = batch["kind"], torch.ones(3, dtype=torch.bool)
    plain = AugConfig(misalign_p=0.0, jitter=0.0, swap_p=0.0, flip=False)
    gray = dataclasses.replace(plain, gray=0.5)
    a = sample_params(16, plain, kinds, allowed, torch.Generator().manual_seed(1))
    b = sample_params(16, gray, kinds, allowed, torch.Generator().manual_seed(1))
    assert a.gray is None and torch.equal(a.warp, b.warp) and 0 < int(b.gray.sum()) < 16
    p2, q2, m2 = apply_params(p, q, m, b)
    luma = lambda x: 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]  # noqa: E731
    for before, after in ((p, p2), (q, q2)):
        chosen, kept = after[b.gray], after[~b.gray]
        assert torch.allclose(chosen, luma(before[b.gray]).unsqueeze(1).expand_as(chosen))
        assert torch.allclose(kept, before[~b.gray], atol=1e-6)  # colour untouched
        assert (before[b.gray][:, 0] != before[b.gray][:, 1]).any()  # there was colour
    assert torch.equal(m2, m)


def test_misalign_kinds_warp_only_those_kinds_and_keep_the_random_stream():
    """Kinds outside ``misalign_allowed`` keep an aligned prompt; every other draw (and the
    warp of allowed kinds) is what it would have been without the rule."""
    kinds = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    cfg = AugConfig(misalign_p=1.0)
    ones = torch.ones(3, dtype=torch.bool)
    a = sample_params(8, cfg, kinds, ones, torch.Generator().manual_seed(2))
    only = torch.tensor([False, True, False])
    b = sample_params(8, cfg, kinds, ones, torch.Generator().manual_seed(2), only)
    eye = torch.eye(3).expand(8, 3, 3)
    allowed = kinds == 1
    assert torch.equal(b.warp[allowed], a.warp[allowed])
    assert torch.equal(b.warp[~allowed], eye[~allowed])
    assert not torch.allclose(a.warp[~allowed], eye[~allowed])
    assert torch.equal(a.color, b.color) and torch.equal(a.swap, b.swap)


def test_unseen_marks_query_content_the_warped_prompt_does_not_show():
    """A prompt shifted right by a quarter of the width no longer shows the query's right
    quarter; an unwarped sample has nothing unseen, and the loss weight drops only those."""
    from synth.train.augment import unseen

    size = 32
    shift = torch.eye(3).repeat(2, 1, 1)
    shift[0, 0, 2] = 0.5  # normalised units: a quarter of the width
    params = AugParams(
        swap=torch.zeros(2, dtype=torch.bool),
        hflip=torch.zeros(2, dtype=torch.bool),
        vflip=torch.zeros(2, dtype=torch.bool),
        transpose=torch.zeros(2, dtype=torch.bool),
        warp=shift,
        color=torch.tensor([1.0, 1.0, 1.0, 0.0]).expand(2, 2, 4).transpose(0, 1),
    )
    hidden = unseen(params, (size, size), margin=0.0)
    assert not hidden[1].any()  # the identity warp hides nothing
    cols = hidden[0, 0].all(dim=0)
    assert cols[: size * 3 // 4].logical_not().all() and cols[size * 3 // 4 :].all()
    # the warped prompt really shows query column x at column x + 8: the right quarter left
    img = torch.arange(size, dtype=torch.float32).expand(1, 1, size, size).repeat(2, 1, 1, 1)
    moved = warp_images(img, shift)
    assert torch.allclose(moved[0, 0, :, 8:], img[0, 0, :, :-8])
    # a margin also drops what lands near the warped frame's edge: the top and bottom rows,
    # and the columns that land within 0.25 of its right edge (x + 0.5 > 0.75)
    banded = unseen(params, (size, size), margin=0.25)[0, 0]
    assert banded[:2].all() and banded[-2:].all() and banded[:, 21:].all()
    assert not banded[4:-4, :20].any() and not unseen(params, (size, size), 0.25)[1].any()


def test_ignore_unseen_weights_the_loss_and_off_leaves_it_whole():
    batch = _pattern_batch(8)
    p, q, m = batch_to_float(batch, 32)
    allowed = torch.ones(3, dtype=torch.bool)
    cfg = AugConfig(misalign_p=1.0, translate=0.3, ignore_unseen=True)
    *_, weight = augment(p, q, m, batch["kind"], cfg, allowed, torch.Generator().manual_seed(5))
    assert weight.shape == m.shape and 0 < weight.mean() < 1
    assert set(weight.unique().tolist()) <= {0.0, 1.0}
    off = dataclasses.replace(cfg, ignore_unseen=False)
    *_, whole = augment(p, q, m, batch["kind"], off, allowed, torch.Generator().manual_seed(5))
    assert bool((whole == 1).all())
    from synth.train.losses import per_sample_loss

    logits = torch.randn_like(m)
    noisy = logits.masked_fill(weight == 0, 50.0)  # wrong where weight is 0, must not count
    for name in ("bce", "dice", "focal", "bce+dice"):
        torch.testing.assert_close(
            per_sample_loss(name, noisy, m, weight), per_sample_loss(name, logits, m, weight)
        )
        assert not torch.allclose(per_sample_loss(name, noisy, m), per_sample_loss(name, logits, m))


def _surface_batch(n: int = 8, size: int = 64):
    """A textured base as prompt; the query is the base with a flat bright square (the edit)."""
    from skimage import data

    base = torch.from_numpy(data.brick()[:size, :size].copy())
    prompt = base.view(1, size, size, 1).expand(n, size, size, 3).contiguous()
    query, mask = prompt.clone(), torch.zeros(n, size, size, dtype=torch.uint8)
    for i in range(n):
        y, x = 4 + 6 * i, 40 - 4 * i
        mask[i, y : y + 10, x : x + 12] = 1
    query[mask.bool()] = 255
    return {"prompt": prompt, "query": query, "mask": mask, "kind": torch.zeros(n).long()}


def test_surface_pairs_pick_only_surfaces_whose_prompt_is_the_base_after_the_swap():
    n = 64
    kinds = torch.arange(n) % 3  # 0: prompt is the base, 1: the query is, 2: unknown to training
    surface = torch.arange(n) % 4 != 3
    base_prompt = torch.tensor([True, False, False])
    allowed = torch.ones(3, dtype=torch.bool)
    cfg = AugConfig(surface_pairs=1.0)
    p = sample_params(n, cfg, kinds, allowed, torch.Generator().manual_seed(7), None, surface)
    q = sample_params(
        n, cfg, kinds, allowed, torch.Generator().manual_seed(7), None, surface, base_prompt
    )
    assert torch.equal(p.surface, surface & ~p.swap)  # every kind's prompt is its base
    assert torch.equal(q.surface, surface & (base_prompt[kinds] ^ q.swap))
    assert q.surface.any() and (q.surface & (kinds == 1)).any()  # a swapped disappearance
    # drawn last: every other parameter replays what surface_pairs=0 draws
    off = sample_params(n, AugConfig(), kinds, allowed, torch.Generator().manual_seed(7))
    assert off.surface is None and off.windows is None
    for name in ("swap", "hflip", "vflip", "transpose", "warp", "color", "flow"):
        assert torch.equal(getattr(off, name), getattr(q, name)), name
    none = sample_params(n, cfg, kinds, allowed, torch.Generator().manual_seed(7))
    assert not none.surface.any()  # no loader flag: nothing is a surface


def test_surface_pairs_take_two_windows_and_the_mask_still_marks_only_the_edit():
    batch = _surface_batch()
    prompt, query, mask = batch_to_float(batch, 64)
    base = prompt.clone()
    n = len(mask)
    pick = torch.ones(n, dtype=torch.bool)
    pick[-1] = False
    draws = torch.rand(n, 4, generator=torch.Generator().manual_seed(1))
    p, q, m = surface_windows(prompt, query, mask, pick, draws)
    _, q_base, m_base = surface_windows(base, base, mask, pick, draws)  # the same windows
    assert torch.equal(m, m_base)
    edge = F.max_pool2d(m, 5, stride=1, padding=2) > 0  # 2 px around it
    for i in range(n - 1):
        assert m[i].sum() > 0  # the query's window is centred on the edit
        changed = (q[i] - q_base[i]).abs().amax(0) > 1e-4
        assert changed[m[i, 0] > 0].all() and not changed[~edge[i, 0]].any()
        # outside the edit the two views show different parts of the surface
        outside = ~edge[i, 0]
        assert (p[i] - q[i]).abs().amax(0)[outside].mean() > 0.05
    assert torch.equal(p[-1], prompt[-1]) and torch.equal(q[-1], query[-1])
    assert torch.equal(m[-1], mask[-1])
    # the prompt is the base seen through a window: scaled by 2, its corner at the draw
    h = 32
    py, px = int(draws[0, 0] * (64 - h + 1)), int(draws[0, 1] * (64 - h + 1))
    window = base[0:1, :, py : py + h, px : px + h]
    assert torch.allclose(p[0:1], F.interpolate(window, (64, 64), mode="bilinear"), atol=1e-6)


def test_surface_pairs_run_through_augment_from_the_loader_flag():
    batch = _surface_batch()
    n = len(batch["kind"])
    views = batch_to_float(batch, 64)
    allowed = torch.ones(1, dtype=torch.bool)
    cfg = AugConfig(misalign_p=0.0, jitter=0.0, swap_p=0.0, flip=False, surface_pairs=1.0)
    surface = torch.arange(n) % 2 == 0
    p, q, m, _ = augment(*views, batch["kind"], cfg, allowed, torch.Generator(), surface=surface)
    replaced = (views[0] - p).abs().flatten(1).amax(1) > 0
    assert torch.equal(replaced, surface)  # exactly the surfaces got another prompt
    assert torch.equal(m[~surface], views[2][~surface])
