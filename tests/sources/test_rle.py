"""The shared compressed-RLE decoder of the COCO and SA-1B sources, against pycocotools."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from synth.sources.rle import rle_run_ends

# pycocotools under numpy 2.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def test_rle_strings_decode_like_pycocotools():
    rng = np.random.default_rng(5)
    # Empty, full, one 307200-px run (4 groups), a diagonal, noise (negative deltas), blobs.
    masks = [np.zeros((7, 5), bool), np.ones((7, 5), bool), np.zeros((480, 640), bool)]
    masks += [np.eye(700, 900, dtype=bool), rng.random((300, 400)) < 0.5]
    for _ in range(20):
        m = np.zeros((int(rng.integers(1, 120)), int(rng.integers(1, 120))), np.uint8)
        for _ in range(int(rng.integers(0, 4))):
            x, y = int(rng.integers(0, m.shape[1])), int(rng.integers(0, m.shape[0]))
            cv2.circle(m, (x, y), int(rng.integers(1, 60)), 1, -1)
        masks.append(m.astype(bool))
    for group in (masks[:5], masks[5:]):
        rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in group]
        strings = [r["counts"] for r in rles]
        offsets = np.cumsum([0] + [len(t) for t in strings])
        chars = np.frombuffer(b"".join(strings), np.uint8)
        ends, first = rle_run_ends(chars, offsets)
        for k, m in enumerate(group):
            run_ends = ends[first[k] : first[k + 1]]
            lengths = np.diff(run_ends, prepend=0)
            assert run_ends[-1] == m.size and (lengths >= 0).all()
            flat = np.repeat(np.arange(lengths.size) % 2, lengths).astype(bool)
            np.testing.assert_array_equal(flat, m.ravel(order="F"))
