"""synth.metrics against scikit-learn, hand-computed PRO cases, both conventions, binning bound."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import measure
from sklearn import metrics as skm

from synth import metrics as sm

# --- ROC / AP / F1max vs scikit-learn ---


def _sk_f1max(y, s):
    p, r, _ = skm.precision_recall_curve(y, s)
    f = 2 * p * r / np.where(p + r > 0, p + r, 1)
    return f.max()


@pytest.mark.parametrize("n", [2, 7, 100, 5000])
@pytest.mark.parametrize("decimals", [None, 1, 0])  # 0 and 1 decimals: heavy ties
def test_classification_metrics_match_sklearn(n, decimals):
    rng = np.random.default_rng(n)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    s = rng.normal(size=n) + y
    if decimals is not None:
        s = np.round(s, decimals)
    got = sm.classification_metrics(y, s)
    assert got["roc"] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert got["ap"] == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    assert got["f1max"] == pytest.approx(_sk_f1max(y, s), abs=1e-12)
    assert sm.roc_auc(y, s) == got["roc"] and sm.average_precision(y, s) == got["ap"]
    assert sm.f1_max(y, s) == got["f1max"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=40).filter(
        lambda xs: len({b for b, _ in xs}) == 2
    )
)
def test_matches_sklearn_on_arbitrary_tied_data(pairs):
    y = np.array([b for b, _ in pairs], dtype=int)
    s = np.array([v for _, v in pairs], dtype=np.float32)
    assert sm.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert sm.average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    assert sm.f1_max(y, s) == pytest.approx(_sk_f1max(y, s), abs=1e-12)


def test_float32_fast_path_handles_signs_zeros_and_ties():
    rng = np.random.default_rng(4)
    s = np.round(rng.normal(size=3000), 1).astype(np.float32)
    s[:20] = -0.0
    s[20:40] = 0.0  # -0.0 and +0.0 are one tie group
    s[40] = -np.float32(3e38)
    y = (rng.random(3000) < 0.3) | (s > 1)
    c32 = sm.binary_curve(y, s)
    c64 = sm.binary_curve(y, s.astype(np.float64))
    np.testing.assert_array_equal(c32.thresholds, c64.thresholds.astype(np.float32))
    np.testing.assert_array_equal(c32.tps, c64.tps)
    assert sm.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert sm.average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)


def test_all_tied_scores_and_single_class():
    y = np.array([0, 1, 0, 1])
    s = np.zeros(4)
    assert sm.roc_auc(y, s) == 0.5  # one diagonal step: half credit
    assert sm.average_precision(y, s) == 0.5
    assert sm.f1_max(y, s) == pytest.approx(2 / 3)
    assert np.isnan(sm.roc_auc(np.zeros(3), np.arange(3.0)))
    assert np.isnan(sm.average_precision(np.zeros(3), np.arange(3.0)))
    assert np.isnan(sm.roc_auc(np.ones(3), np.arange(3.0)))


def test_invalid_inputs():
    with pytest.raises(ValueError, match="differ in size"):
        sm.roc_auc(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        sm.roc_auc(np.array([0, 1]), np.array([0.0, np.nan]))


# --- PRO: hand-computed ---
#
# One 1x14 "image": region A = pixels 0-1 (area 2), region B = pixels 10-13 (area 4),
# 8 negatives. Scores chosen off the paper's threshold grid (min 0.1, step 0.004).
HAND_MASK = np.zeros((1, 1, 14), bool)
HAND_MASK[0, 0, [0, 1, 10, 11, 12, 13]] = True
HAND_MAP = np.zeros((1, 1, 14), np.float64)
HAND_MAP[0, 0, [0, 1]] = [0.9, 0.502]  # A
HAND_MAP[0, 0, 10:] = [0.802, 0.802, 0.302, 0.302]  # B
HAND_MAP[0, 0, 2:10] = [0.702, 0.202, 0.202, 0.202, 0.202, 0.202, 0.202, 0.1]


def test_pro_curve_by_hand():
    # threshold: 0.9 -> A 1/2; 0.802 -> B 2/4; 0.702 -> 1 FP; 0.502 -> A 2/2;
    # 0.302 -> B 4/4; 0.202 -> 7 FP; 0.1 -> 8 FP
    c = sm.pro_curve(HAND_MASK, HAND_MAP)
    np.testing.assert_allclose(c.fpr, [0, 0, 0, 1 / 8, 1 / 8, 1 / 8, 7 / 8, 1])
    np.testing.assert_allclose(c.pro, [0, 0.25, 0.5, 0.5, 0.75, 1, 1, 1])


def test_standard_aupro_by_hand():
    # area: 0..1/8 at PRO 0.5 = 0.0625; 1/8..0.3 at PRO 1 = 0.175; / 0.3
    assert sm.aupro(HAND_MASK, HAND_MAP) == pytest.approx((0.0625 + 0.175) / 0.3)


def test_paper_aupro_by_hand():
    # grid k = 0..199, th = 0.1 + 0.004 k, positive if score > th:
    #   FPR 7/8 for k <= 25, 1/8 for k 26..150, 0 for k >= 151 -> keep k >= 26, FPR 1/8 -> 1
    #   PRO k 26..50: 1, 51..100: .75, 101..175: .5, 176..199: .25
    #   the only horizontal step is k 150 -> 151 (x 1 -> 0) at PRO 0.5: area 0.5
    assert sm.aupro_paper(HAND_MASK, HAND_MAP) == pytest.approx(0.5)


def test_old_anomalib_division_inflates():
    # Dividing the area up to the limit by the last FPR reached (1/8) instead of by the limit
    # (0.3): the gap between the last point and the limit is credited twice.
    c = sm.pro_curve(HAND_MASK, HAND_MAP)
    area = sm.auc_to_limit(c.fpr, c.pro, 0.3) * 0.3
    last_fpr = c.fpr[c.fpr <= 0.3].max()
    legacy = area / last_fpr
    assert legacy > 1.0 > sm.aupro(HAND_MASK, HAND_MAP)


def test_regions_are_8_connected_and_per_image():
    masks = np.zeros((2, 5, 5), bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # diagonal: one region
    masks[0, 4, 4] = True  # second region
    masks[1, 2, 2] = True  # third, in another image
    labels, areas = sm.region_labels(masks)
    assert areas.tolist() == [46, 2, 1, 1]
    assert labels[0, 0, 0] == labels[0, 1, 1] != labels[0, 4, 4]


def test_pro_averages_regions_not_pixels():
    # big region fully found, small region missed: PRO 0.5 although 90% of pixels are found
    masks = np.zeros((1, 10, 10), bool)
    masks[0, :3, :3] = True  # 9 px
    masks[0, 9, 9] = True  # 1 px
    maps = np.zeros((1, 10, 10))
    maps[0, :3, :3] = 1.0
    c = sm.pro_curve(masks, maps)
    assert c.pro[1] == pytest.approx(0.5) and c.fpr[1] == 0


def test_perfect_and_undefined_pro():
    masks = np.zeros((2, 8, 8), bool)
    masks[0, 2:4, 2:4] = True
    assert sm.aupro(masks, masks.astype(float)) == pytest.approx(1.0)
    # a binary map never leaves FPR 0, so the paper's FPR rescaling is 0/0 (its code fails)
    assert np.isnan(sm.aupro_paper(masks, masks.astype(float)))
    assert np.isnan(sm.aupro(np.zeros((1, 4, 4), bool), np.random.rand(1, 4, 4)))
    assert np.isnan(sm.aupro_paper(np.zeros((1, 4, 4), bool), np.random.rand(1, 4, 4)))


def _regions(masks):
    """(image index, pixel coordinates) of every 8-connected region, via scikit-image."""
    return [
        (i, r.coords)
        for i, m in enumerate(masks)
        for r in measure.regionprops(measure.label(m, connectivity=2))
    ]


def _brute_pro_curve(masks, maps):
    """Threshold by threshold (score >= t): the definition, slowly."""
    regions = _regions(masks)
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        b = maps >= t
        pros.append(np.mean([b[i][c[:, 0], c[:, 1]].mean() for i, c in regions]))
        fprs.append((b & ~masks).sum() / (~masks).sum())
    return np.array(fprs), np.array(pros)


def _brute_paper_pro(masks, maps, steps=200, limit=0.3):
    """The MetaUAS procedure written out: loop over thresholds (score > th), sklearn's auc."""
    regions = _regions(masks)
    lo, hi = maps.min(), maps.max()
    fprs, pros = [], []
    for th in np.arange(lo, hi, (hi - lo) / steps):
        b = maps > th
        pros.append(np.mean([b[i][c[:, 0], c[:, 1]].mean() for i, c in regions]))
        fprs.append((b & ~masks).sum() / (~masks).sum())
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs < limit
    f = fprs[keep]
    return skm.auc((f - f.min()) / (f.max() - f.min()), pros[keep])


def _random_category(rng, n=6, h=24, w=24, quantize=None):
    masks = np.zeros((n, h, w), bool)
    for i in range(n // 2):
        for _ in range(rng.integers(1, 3)):
            y, x = rng.integers(0, h - 6, 2)
            masks[i, y : y + rng.integers(2, 7), x : x + rng.integers(2, 7)] = True
    maps = rng.random((n, h, w)) + 0.6 * masks
    if quantize:
        maps = np.round(maps * quantize) / quantize
    return masks, maps


@pytest.mark.parametrize("quantize", [None, 20])
def test_exact_pro_curve_matches_brute_force(quantize):
    masks, maps = _random_category(np.random.default_rng(1), quantize=quantize)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # a diagonal pair: skimage connectivity=2 agrees
    fpr, pro = _brute_pro_curve(masks, maps)
    c = sm.pro_curve(masks, maps)
    np.testing.assert_allclose(c.fpr, fpr, atol=1e-12)
    np.testing.assert_allclose(c.pro, pro, atol=1e-12)


@pytest.mark.parametrize("seed", [2, 3])
def test_paper_pro_matches_the_procedure(seed):
    masks, maps = _random_category(np.random.default_rng(seed))
    assert sm.aupro_paper(masks, maps) == pytest.approx(_brute_paper_pro(masks, maps), abs=1e-12)


def test_auc_to_limit_interpolates_at_the_limit():
    fpr = np.array([0.0, 0.5, 1.0])
    assert sm.auc_to_limit(fpr, fpr, 0.3) == pytest.approx(0.15)  # y = x: 0.045 / 0.3
    assert sm.auc_to_limit(fpr, np.ones(3), 0.3) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        sm.auc_to_limit(fpr, fpr, 0.0)


# --- binned vs exact ---


@pytest.mark.parametrize("bins", [10, 50, 200, 1000])
def test_binned_aupro_within_its_error_bound(bins):
    masks, maps = _random_category(np.random.default_rng(5), n=20, h=48, w=48)
    exact = sm.aupro(masks, maps)
    c = sm.pro_curve(masks, maps, bins=bins)
    binned = sm.auc_to_limit(c.fpr, c.pro)
    bound = sm.aupro_error_bound(c)
    assert abs(binned - exact) <= bound + 1e-12
    assert binned == sm.aupro(masks, maps, bins=bins)
    if bins >= 1000:
        assert bound < 0.01


def test_binned_points_lie_on_the_exact_curve():
    masks, maps = _random_category(np.random.default_rng(6))
    exact = sm.pro_curve(masks, maps)
    binned = sm.pro_curve(masks, maps, bins=37)
    pts = set(zip(np.round(exact.fpr, 12), np.round(exact.pro, 12), strict=True))
    assert all(
        p in pts for p in zip(np.round(binned.fpr, 12), np.round(binned.pro, 12), strict=True)
    )


# --- conventions ---


def test_minmax_normalisation_leaves_rank_metrics_unchanged():
    rng = np.random.default_rng(7)
    masks, maps = _random_category(rng, quantize=64)
    labels = masks.reshape(len(masks), -1).any(axis=1)
    shifted = (3.0 + 2.0 * maps).astype(np.float32)  # exact in float32: no ties created
    std = sm.evaluate_category(shifted, masks, labels, "standard").values
    paper = sm.evaluate_category(shifted, masks, labels, "paper").values
    for m in ("I-ROC", "I-PR", "I-F1max", "P-ROC", "P-PR", "P-F1max"):
        assert std[m] == pytest.approx(paper[m], abs=1e-12), m
    # the PRO definitions differ: thresholds and FPR rescaling
    assert std["P-PRO"] != paper["P-PRO"]  # (far apart on the hand case below)
    assert paper["P-PRO"] == pytest.approx(sm.aupro_paper(masks, shifted))
    # and the paper's grid is relative to min/max: rescaling the maps does not move it
    assert sm.aupro_paper(masks, maps) == pytest.approx(sm.aupro_paper(masks, shifted), abs=1e-9)


def test_conventions_on_the_hand_case():
    labels = np.array([1])
    std = sm.evaluate_category(HAND_MAP, HAND_MASK, labels, "standard").values
    paper = sm.evaluate_category(HAND_MAP, HAND_MASK, labels, "paper").values
    assert std["P-PRO"] == pytest.approx(0.2375 / 0.3)
    assert paper["P-PRO"] == pytest.approx(0.5)
    assert std["P-ROC"] == pytest.approx(paper["P-ROC"])


def test_paper_reports_inverted_roc_as_one_minus_auc():
    masks, maps = _random_category(np.random.default_rng(8))
    labels = masks.reshape(len(masks), -1).any(axis=1)
    std = sm.evaluate_category(-maps, masks, labels, "standard")
    paper = sm.evaluate_category(-maps, masks, labels, "paper")
    assert std.values["P-ROC"] < 0.5 and not std.notes
    assert paper.values["P-ROC"] == pytest.approx(1 - std.values["P-ROC"], abs=1e-6)
    assert any("P-ROC" in n and "1 - AUC" in n for n in paper.notes)


def test_image_scores_max_and_topk():
    maps = np.zeros((2, 10, 10))
    maps[0, 0, 0] = 1.0  # a single hot pixel
    maps[1, :2, :] = 0.5  # a warm band of 20 pixels
    assert sm.image_scores(maps, "max").tolist() == [1.0, 0.5]
    assert sm.image_scores(maps, "topk", 0.1).tolist() == pytest.approx([0.1, 0.5])
    with pytest.raises(ValueError):
        sm.image_scores(maps, "mean")


def test_evaluate_category_matches_the_single_metrics():
    masks, maps = _random_category(np.random.default_rng(9), quantize=30)
    labels = masks.reshape(len(masks), -1).any(axis=1)
    v = sm.evaluate_category(maps, masks, labels).values
    assert v["P-ROC"] == pytest.approx(skm.roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert v["P-PR"] == pytest.approx(
        skm.average_precision_score(masks.ravel(), maps.ravel()), abs=1e-12
    )
    assert v["P-F1max"] == pytest.approx(_sk_f1max(masks.ravel(), maps.ravel()), abs=1e-12)
    assert v["P-PRO"] == pytest.approx(sm.aupro(masks, maps), abs=1e-12)
    scores = maps.reshape(len(maps), -1).max(axis=1)
    assert v["I-ROC"] == pytest.approx(skm.roc_auc_score(labels, scores))


def test_category_sized_case_runs():
    """100 maps at 256x256 (6.5M pixels), both conventions; timing is in docs/evaluation.md."""
    rng = np.random.default_rng(10)
    maps = rng.random((100, 256, 256), dtype=np.float32)
    masks = np.zeros(maps.shape, bool)
    for i in range(50):
        y, x = rng.integers(0, 200, 2)
        masks[i, y : y + 40, x : x + 30] = True
    maps += 0.5 * masks
    labels = np.arange(100) < 50
    for conv in sm.CONVENTIONS:
        v = sm.evaluate_category(maps, masks, labels, conv).values
        assert all(0.5 < x <= 1.0 for x in v.values()), (conv, v)
