"""GroupedEligible answers as the sorted eligible array does, loading only the groups asked."""

from __future__ import annotations

import numpy as np

from synth.index.groups import GroupedEligible


def test_same_answers_as_the_sorted_array_loading_only_what_is_asked():
    rng = np.random.default_rng(0)
    sizes = np.array([5, 0, 7, 3, 6])
    starts = np.concatenate([[0], np.cumsum(sizes)])
    flags = rng.random(starts[-1]) < 0.5
    per_group = [np.flatnonzero(flags[starts[g] : starts[g + 1]]) for g in range(sizes.size)]
    loaded = []
    elig = GroupedEligible(
        starts, [p.size for p in per_group], lambda g: loaded.append(g) or per_group[g]
    )
    flat = np.flatnonzero(flags)
    assert elig.size == len(elig) == flat.size and loaded == []
    assert [elig[r] for r in range(flat.size)] == flat.tolist()
    loaded.clear()
    items = np.array([starts[3] + 1, starts[3], starts[2] + 6])
    np.testing.assert_array_equal(elig.contains(items), flags[items])
    assert sorted(set(loaded)) == [2, 3]
    np.testing.assert_array_equal(elig.contains(np.arange(starts[-1])), flags)
