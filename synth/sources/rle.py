"""Compressed COCO RLE decoded in bulk and sampled at an output grid, without full-size masks.

The COCO and SA-1B sources both store masks as compressed RLE strings and both resize them to
a few hundred pixels a side. Decoding each mask at full resolution (``pycocotools``) costs the
input size; here all of an image's strings are decoded together into run ends and only the
output pixels are looked up, so the cost follows the output size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from synth.errors import SourceError
from synth.sources.resize import nearest_indices


def rle_run_ends(chars: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode several COCO compressed-RLE strings at once into cumulative run ends.

    Mirrors pycocotools' ``rleFrString``: a count is a little-endian series of 5-bit groups
    (char - 48; bit 0x20 = another group follows, bit 0x10 of the last group = negative), and
    every count after the third is stored as a delta to the count two places back.

    Args:
        chars: the strings concatenated (uint8).
        offsets: int64 [k+1] string boundaries within ``chars``.

    Returns:
        ``ends`` (int64, every run's end position, column-major, per string) and ``first``
        (int64 [k+1], the first run of each string within ``ends``).
    """
    c = chars.astype(np.int64) - 48
    last = np.flatnonzero((c & 0x20) == 0)
    start = np.empty_like(last)
    start[:1] = 0
    start[1:] = last[:-1] + 1
    group = np.arange(c.size) - np.repeat(start, last - start + 1)
    values = np.add.reduceat((c & 0x1F) << (5 * group), start) if start.size else start
    negative = (c[last] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * (group[last[negative]] + 1))
    first = np.searchsorted(start, offsets)
    runs = np.diff(first)
    m = np.arange(values.size) - np.repeat(first[:-1], runs)
    odd = (m & 1) == 1
    odd_sums = _segment_cumsum(np.where(odd, values, 0), first, runs)
    even_sums = _segment_cumsum(np.where(~odd & (m >= 2), values, 0), first, runs)
    counts = np.where(m == 0, values, np.where(odd, odd_sums, even_sums))
    return _segment_cumsum(counts, first, runs), first


def check_cover(
    totals: np.ndarray, hw: tuple[int, int], ann_ids: Sequence[int] | np.ndarray, source: str
) -> None:
    """Refuse RLEs that do not cover exactly ``h * w`` pixels: sampling or decoding them would
    read past the image or leave part of it undefined.

    Args:
        totals: pixels each RLE covers (the last of its run ends).
        hw: the image's (height, width).
        ann_ids: the annotation id of each RLE, for the message.
        source: where the RLEs come from, for the message.

    Raises:
        SourceError: naming the first RLE whose total is not ``h * w``.
    """
    h, w = hw
    bad = np.flatnonzero(totals != h * w)
    if bad.size:
        k = int(bad[0])
        raise SourceError(
            f"{source}: annotation {int(ann_ids[k])} RLE covers "
            f"{int(totals[k])} pixels, not {h}x{w}; fix or drop it"
        )


def sample_rles(
    chars: np.ndarray,
    offsets: np.ndarray,
    boxes: np.ndarray,
    wanted: np.ndarray,
    hw: tuple[int, int],
    size: tuple[int, int],
    *,
    ann_ids: Sequence[int] | np.ndarray,
    source: str,
) -> np.ndarray:
    """Nearest-neighbour samples at ``size`` of RLEs ``wanted`` of one ``hw`` image.

    Every output pixel is looked up in its RLE's run ends (one ``searchsorted`` for all of
    them); only pixels inside the RLE's box are looked up, the rest stay False. The result
    equals ``resize_mask`` of the decoded masks.

    Args:
        chars, offsets: the image's k compressed-RLE strings, as for ``rle_run_ends``.
        boxes: [k, 4] the masks' bounding boxes (x, y, w, h) in pixels.
        wanted: int positions (among the k) of the masks to sample.
        hw: the image's (height, width).
        size: the output (height, width).
        ann_ids, source: as for ``check_cover``.

    Returns:
        bool [len(wanted), H, W], one C-contiguous mask per wanted RLE.

    Raises:
        SourceError: an RLE does not cover exactly ``h * w`` pixels.
    """
    (h, w), (H, W) = hw, size
    ends, first = rle_run_ends(chars, offsets)
    check_cover(ends[first[1:] - 1], hw, ann_ids, source)
    rows, cols = nearest_indices(h, H), nearest_indices(w, W)
    shift = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64) * (h * w), np.diff(first))
    ends += shift
    boxes = np.asarray(boxes, np.float64)[wanted]
    xs = np.searchsorted(cols, np.concatenate([boxes[:, 0], boxes[:, 0] + boxes[:, 2]]))
    ys = np.searchsorted(rows, np.concatenate([boxes[:, 1], boxes[:, 1] + boxes[:, 3]]))
    n = wanted.size
    spans = list(
        zip(ys[:n].tolist(), ys[n:].tolist(), xs[:n].tolist(), xs[n:].tolist(), strict=True)
    )
    col_pos, base = cols * h, wanted * (h * w)
    queries = [
        np.add.outer(col_pos[x0:x1] + b, rows[y0:y1]).ravel()
        for (y0, y1, x0, x1), b in zip(spans, base.tolist(), strict=True)
    ]
    sizes = [q.size for q in queries]
    runs = np.searchsorted(ends, np.concatenate(queries), side="right")
    runs -= np.repeat(first[wanted], sizes)
    bits = (runs & 1).astype(bool)
    out = np.zeros((wanted.size, H, W), bool)
    pos = 0
    for k, ((y0, y1, x0, x1), count) in enumerate(zip(spans, sizes, strict=True)):
        out[k, y0:y1, x0:x1] = bits[pos : pos + count].reshape(x1 - x0, y1 - y0).T
        pos += count
    return out


def _segment_cumsum(x: np.ndarray, first: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Cumulative sum of ``x`` restarting at every segment (``first[:-1]``, ``lengths``)."""
    total = np.concatenate([[0], np.cumsum(x)])
    return total[1:] - np.repeat(total[first[:-1]], lengths)
