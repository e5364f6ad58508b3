"""Items of a source stored in groups (one group per tar), known one group at a time.

A tar-sharded source numbers its images globally (tar after tar), but only knows which of them
hold usable instances for the tars whose index it has loaded. ``GroupedEligible`` answers the
questions sampling asks of the eligible items (how many, is this one eligible, the r-th one)
from per-group counts, loading a group's index only when an answer needs it: a shard that draws
from two tars loads two indexes, whatever the number of tars.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class GroupedEligible:
    """The eligible items of a grouped source, as sampling uses a sorted array of them.

    Args:
        starts: int64 [G+1] first global item of each group (and the total at the end).
        counts: int64 [G] eligible items per group.
        of_group: sorted local positions of group ``g``'s eligible items (loads its index).
    """

    def __init__(
        self, starts: np.ndarray, counts: np.ndarray, of_group: Callable[[int], np.ndarray]
    ) -> None:
        self.starts = np.asarray(starts, np.int64)
        self._csum = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self._of_group = of_group
        self.size = int(self._csum[-1])

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, r: int) -> int:
        """The ``r``-th eligible item in global order (loads one group's index)."""
        r = int(r)
        if not 0 <= r < self.size:
            raise IndexError(f"eligible item {r} out of range [0, {self.size})")
        g = int(np.searchsorted(self._csum, r, side="right")) - 1
        return int(self.starts[g] + self._of_group(g)[r - self._csum[g]])

    def contains(self, items: np.ndarray) -> np.ndarray:
        """bool per item: eligible or not (loads the index of every group ``items`` touch)."""
        items = np.asarray(items, np.int64)
        out = np.zeros(items.shape, bool)
        groups = np.searchsorted(self.starts, items, side="right") - 1
        for g in np.unique(groups).tolist():
            at = groups == g
            local = items[at] - self.starts[g]
            elig = self._of_group(g)
            if elig.size:
                pos = np.minimum(np.searchsorted(elig, local), elig.size - 1)
                out[at] = elig[pos] == local
        return out
