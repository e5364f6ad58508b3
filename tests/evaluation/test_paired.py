"""Paired bootstrap: binned metrics against synth.metrics, verdicts, pairing, the run_eval hook."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from synth.evaluation import (
    MapStatsCollector,
    metrics_from_stats,
    paired_bootstrap,
    paired_bootstrap_mean,
    run_eval,
    summarize_maps,
)
from synth.metrics import evaluate_category, region_labels

SIZE = 48


def blob_case(n: int = 40, seed: int = 0, strength: float = 1.0, size: int = SIZE):
    """Half the images anomalous with 1-3 ellipses; maps = smooth noise + blurred blobs whose
    strength varies per image (so some anomalies are easy and some hard)."""
    rng = np.random.default_rng(seed)
    maps = np.empty((n, size, size), np.float32)
    masks = np.zeros((n, size, size), bool)
    labels = np.arange(n) % 2
    for i in range(n):
        m = np.zeros((size, size), np.uint8)
        if labels[i]:
            for _ in range(int(rng.integers(1, 4))):
                c = tuple(int(v) for v in rng.integers(0, size, 2))
                ax = tuple(int(v) for v in rng.integers(2, size // 6, 2))
                cv2.ellipse(m, c, ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        masks[i] = m > 0
        noise = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 2)
        signal = cv2.GaussianBlur(m.astype(np.float32), (0, 0), 1.5) * rng.uniform(0.2, 1.5)
        maps[i] = noise + strength * signal
    return maps, masks, labels


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("strength", [0.3, 1.0, 3.0])
def test_binned_metrics_match_synth_metrics(seed, strength):
    maps, masks, labels = blob_case(seed=seed, strength=strength)
    stats = summarize_maps(maps, masks, labels, bins=1024)
    got = metrics_from_stats(stats, np.ones((1, len(maps))))
    exact = evaluate_category(maps, masks, labels).values
    assert got["I-ROC"][0] == pytest.approx(exact["I-ROC"], abs=1e-12)
    assert got["P-ROC"][0] == pytest.approx(exact["P-ROC"], abs=2e-3)
    assert got["P-PRO"][0] == pytest.approx(exact["P-PRO"], abs=5e-3)
    # regions are those of synth.metrics (8-connected), in image order
    _, areas = region_labels(masks)
    assert np.array_equal(stats.region_area, areas[1:])
    assert stats.neg_hist.sum() == (~masks).sum() and stats.pos_hist.sum() == masks.sum()


def test_coarse_bins_and_ties_stay_close():
    maps, masks, labels = blob_case(seed=3)
    quantised = np.clip(np.round(maps * 4) / 4, 0, None)  # many ties, a mass at 0
    exact = evaluate_category(quantised, masks, labels).values
    stats = summarize_maps(quantised, masks, labels, bins=1024)
    assert stats.n_bins < 1024  # duplicate quantiles merged
    got = metrics_from_stats(stats, np.ones(len(maps)))
    for m in got:
        assert got[m][0] == pytest.approx(exact[m], abs=1e-3)
    coarse = metrics_from_stats(summarize_maps(maps, masks, labels, bins=64), np.ones(len(maps)))
    ref = evaluate_category(maps, masks, labels).values
    assert coarse["P-ROC"][0] == pytest.approx(ref["P-ROC"], abs=0.01)
    assert coarse["P-PRO"][0] == pytest.approx(ref["P-PRO"], abs=0.02)


def test_multiplicities_are_repeated_images():
    maps, masks, labels = blob_case(n=20, seed=4)
    stats = summarize_maps(maps, masks, labels)
    rng = np.random.default_rng(0)
    weights = rng.integers(0, 3, size=(5, 20))
    weights[:, :2] = 1  # keep both classes present
    got = metrics_from_stats(stats, weights)
    for row, w in enumerate(weights):
        idx = np.repeat(np.arange(20), w)
        exact = evaluate_category(maps[idx], masks[idx], labels[idx]).values
        assert got["I-ROC"][row] == pytest.approx(exact["I-ROC"], abs=1e-12)
        assert got["P-ROC"][row] == pytest.approx(exact["P-ROC"], abs=2e-3)
        assert got["P-PRO"][row] == pytest.approx(exact["P-PRO"], abs=5e-3)
    # rows are independent: the vectorised result is the row-by-row one
    one = metrics_from_stats(stats, weights[3])
    for m in got:
        assert one[m][0] == got[m][3]


def test_summary_is_small():
    maps, masks, labels = blob_case(n=30, size=128)
    stats = summarize_maps(maps, masks, labels, bins=1024)
    assert stats.neg_hist.dtype == np.int32 and stats.region_hist.dtype == np.int32
    # 300 images would take 10x this: a few MB
    assert stats.nbytes < 0.5e6


def test_a_predictor_against_itself_ties_exactly():
    maps, masks, labels = blob_case(seed=5)
    s = summarize_maps(maps, masks, labels)
    res = paired_bootstrap([s], [s], n_boot=200)
    for m, d in res.metrics.items():
        assert d.diff == 0.0 and d.low == 0.0 and d.high == 0.0 and d.verdict == "ties"
        assert np.all(res.replicates[m] == 0.0)
    # several runs drawn with shared keys (prompt seeds): still exactly 0 in every replicate
    runs = [summarize_maps(blob_case(seed=5, strength=k)[0], masks, labels) for k in (1, 2, 3)]
    res = paired_bootstrap(runs, runs, n_boot=200, keys_a=[1, 2, 3], keys_b=[1, 2, 3])
    for m in res.metrics:
        assert np.all(res.replicates[m] == 0.0) and res[m].verdict == "ties"


def test_clearly_better_beats_and_reverse_loses():
    _, masks, labels = blob_case(seed=6)
    rng = np.random.default_rng(1)
    good = masks + rng.normal(0, 0.3, masks.shape).astype(np.float32)
    noise = rng.normal(0, 1, masks.shape).astype(np.float32)
    s_good = summarize_maps(good, masks, labels)
    s_noise = summarize_maps(noise, masks, labels)
    res = paired_bootstrap([s_noise], [s_good], n_boot=300)
    rev = paired_bootstrap([s_good], [s_noise], n_boot=300)
    for m in ("I-ROC", "P-ROC", "P-PRO"):
        assert res[m].verdict == "beats" and res[m].low > 0.2
        assert rev[m].verdict == "loses" and rev[m].high < -0.2
        assert rev[m].diff == pytest.approx(-res[m].diff)
    assert "beats" in res.format("noise", "good")


def test_resampling_is_deterministic_for_a_seed():
    maps, masks, labels = blob_case(seed=7)
    a = [summarize_maps(maps, masks, labels)]
    b = [summarize_maps(maps + 0.5 * masks, masks, labels)]
    r1 = paired_bootstrap(a, b, n_boot=100, seed=3)
    r2 = paired_bootstrap(a, b, n_boot=100, seed=3)
    r3 = paired_bootstrap(a, b, n_boot=100, seed=4)
    for m in r1.metrics:
        assert np.array_equal(r1.replicates[m], r2.replicates[m])
        assert r1[m] == r2[m]
    assert not np.array_equal(r1.replicates["P-PRO"], r3.replicates["P-PRO"])


def stratified_weights(labels: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap multiplicities drawn within each label, independent of the module's draws."""
    rng = np.random.default_rng(seed)
    w = np.zeros((n_boot, labels.size))
    for v in (0, 1):
        idx = np.flatnonzero(labels == v)
        w[:, idx] = rng.multinomial(idx.size, np.full(idx.size, 1 / idx.size), n_boot)
    return w


def test_pairing_detects_a_small_consistent_gain():
    """Per-image difficulty varies a lot (so each metric alone has a wide interval) while b is
    a little better on every anomalous image: only the paired interval excludes 0."""
    maps, masks, labels = blob_case(n=60, seed=8, strength=1.0)
    a = summarize_maps(maps, masks, labels)
    b = summarize_maps(maps + 0.01 * masks, masks, labels)
    n_boot = 400
    res = paired_bootstrap([a], [b], n_boot=n_boot, seed=0)
    for m in ("P-ROC", "P-PRO"):
        assert 0 < res[m].diff < 0.01
        assert res[m].verdict == "beats"
        # the unpaired view: two separate intervals overlap, they cannot tell a from b
        rep_a = metrics_from_stats(a, stratified_weights(labels, n_boot, 1))[m]
        rep_b = metrics_from_stats(b, stratified_weights(labels, n_boot, 2))[m]
        lo_a, hi_a = np.percentile(rep_a, [2.5, 97.5])
        lo_b, hi_b = np.percentile(rep_b, [2.5, 97.5])
        assert lo_b < hi_a
        assert res[m].high - res[m].low < (hi_a - lo_a) / 5


def test_runs_are_resampled_by_group():
    maps, masks, labels = blob_case(seed=10)
    a = [summarize_maps(maps, masks, labels)]
    # b's two training seeds differ a lot; its prompt seeds within a training seed a little
    b = [
        summarize_maps(maps + g * masks + 0.01 * p * masks, masks, labels)
        for g in (0.0, 2.0)
        for p in range(3)
    ]
    groups = ["t0"] * 3 + ["t1"] * 3
    fixed = paired_bootstrap(a, b, n_boot=300, resample_runs=False)
    nested = paired_bootstrap(a, b, n_boot=300, groups_b=groups)
    crossed = paired_bootstrap(
        a * 3, b, n_boot=300, groups_b=groups, keys_a=[0, 1, 2], keys_b=[0, 1, 2] * 2
    )
    for res in (nested, crossed):
        assert res["P-PRO"].diff == pytest.approx(fixed["P-PRO"].diff)
        # drawing training seeds adds their large spread to the interval
        width = res["P-PRO"].high - res["P-PRO"].low
        assert width > 2 * (fixed["P-PRO"].high - fixed["P-PRO"].low)
    with pytest.raises(ValueError, match="each key exactly once"):
        paired_bootstrap(a * 3, b, groups_b=groups, keys_a=[0, 1, 2], keys_b=[0, 1, 2, 0, 1, 1])
    with pytest.raises(ValueError, match="both predictors"):
        paired_bootstrap(a, b, keys_a=[0])
    with pytest.raises(ValueError, match="same test images"):
        other = blob_case(seed=11)
        paired_bootstrap(a, [summarize_maps(*other)])


def test_mean_over_categories_skips_undefined():
    cats = {}
    for c, seed in enumerate((12, 13)):
        maps, masks, labels = blob_case(seed=seed)
        cats[f"c{c}"] = (
            [summarize_maps(maps, masks, labels)],
            [summarize_maps(maps + 0.3 * masks, masks, labels)],
        )
    maps, _, _ = blob_case(seed=14)
    normal = np.zeros(maps.shape, bool), np.zeros(len(maps), np.int64)
    cats["all_normal"] = ([summarize_maps(maps, *normal)], [summarize_maps(maps * 2, *normal)])
    res = paired_bootstrap_mean(cats, n_boot=200)
    assert set(res.parts) == {"c0", "c1", "all_normal"}
    assert res.parts["all_normal"]["P-PRO"].verdict == "undefined"
    for m in ("I-ROC", "P-ROC", "P-PRO"):
        d = [res.parts[c][m] for c in ("c0", "c1")]
        assert res[m].diff == pytest.approx(np.mean([x.diff for x in d]))
        assert res[m].a == pytest.approx(np.mean([x.a for x in d]))
        assert np.array_equal(
            res.replicates[m], (res.parts["c0"].replicates[m] + res.parts["c1"].replicates[m]) / 2
        )
        assert res[m].verdict == "beats"
    # the first category of a mean sees the same image draws as a single-category call
    single = paired_bootstrap(*cats["c0"], n_boot=200)
    assert np.array_equal(single.replicates["P-PRO"], res.parts["c0"].replicates["P-PRO"])


def test_on_maps_hook_and_collector(mvtec_tree, fake_predictor):
    calls = []

    def hook(category, run, maps, masks, labels):
        calls.append((category, run, maps.shape, maps.dtype, masks.shape, masks.dtype, labels))

    plain = run_eval(fake_predictor, "mvtec", mvtec_tree, seeds=(1, 3), progress=False)
    hooked = run_eval(
        fake_predictor, "mvtec", mvtec_tree, seeds=(1, 3), progress=False, on_maps=hook
    )
    assert plain.per_run == hooked.per_run
    assert [(c[0], c[1]) for c in calls] == [
        ("bottle", 0),
        ("bottle", 1),
        ("cable", 0),
        ("cable", 1),
    ]
    for _, _, shape, dtype, mshape, mdtype, labels in calls:
        assert shape == mshape == (6, 32, 32) and dtype == np.float32 and mdtype == np.bool_
        assert labels.shape == (6,) and labels.sum() == 3

    collector = MapStatsCollector(bins=256)
    res = run_eval(
        fake_predictor, "mvtec", mvtec_tree, seeds=(1, 3), progress=False, on_maps=collector
    )
    assert {c: len(v) for c, v in collector.stats.items()} == {"bottle": 2, "cable": 2}
    for cat, runs in collector.stats.items():
        for r, s in enumerate(runs):
            got = metrics_from_stats(s, np.ones(s.n_images))
            assert got["I-ROC"][0] == pytest.approx(res.per_run[r][cat]["I-ROC"], abs=1e-12)
            assert got["P-ROC"][0] == pytest.approx(res.per_run[r][cat]["P-ROC"], abs=5e-3)
    cmp = paired_bootstrap_mean(
        {c: (v, v) for c, v in collector.stats.items()}, n_boot=50, keys_a=[1, 3], keys_b=[1, 3]
    )
    assert all(d.diff == 0.0 and d.verdict == "ties" for d in cmp.metrics.values())
