"""Validation metrics: exact AUROC/AP match scikit-learn; the binned meter is close to exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synth.train.losses import per_sample_loss
from synth.train.metrics import SegmentationMeter, auroc_ap

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def test_exact_auroc_ap_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.random(2000) < 0.2
    scores = np.round(rng.normal(labels * 1.0, 1.0), 1)  # many ties
    auroc, ap = auroc_ap(scores, labels)
    assert auroc == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)
    assert ap == pytest.approx(sklearn_metrics.average_precision_score(labels, scores), abs=1e-12)


def test_meter_matches_exact_metrics_and_skips_invalid_samples():
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(6, 1, 16, 16, generator=g) < 0.1).float()
    logits = torch.randn(6, 1, 16, 16, generator=g) + 3 * mask
    valid = torch.tensor([True, True, True, True, True, False])
    meter = SegmentationMeter()
    meter.update(logits[:3], mask[:3], valid[:3])
    meter.update(logits[3:], mask[3:], valid[3:])
    got = meter.compute()
    ref_auroc, ref_ap = auroc_ap(logits[:5].numpy(), mask[:5].numpy())
    assert got["pixel_auroc"] == pytest.approx(ref_auroc, abs=2e-3)
    assert got["pixel_ap"] == pytest.approx(ref_ap, abs=2e-3)
    assert len(np.concatenate(meter.image_scores)) == 5


@pytest.mark.parametrize("name", ["bce", "dice", "focal", "bce+dice"])
def test_losses_prefer_the_right_answer(name):
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:5, 2:5] = 1
    good = per_sample_loss(name, (target * 2 - 1) * 8, target)
    bad = per_sample_loss(name, -(target * 2 - 1) * 8, target)
    assert good.shape == (2,) and (good < bad).all()
