"""``cachekit.ids``: sorted distinct video indices by sorting (NumPy 2.3+'s hash-based ``np.unique``
was ~90x slower on a million distinct indices): the same values and dtype as ``np.unique`` and
``np.union1d``."""

from __future__ import annotations

import numpy as np
import pytest

from cachekit.ids import union_ids, unique_ids


@pytest.mark.parametrize("ids", [
    np.array([], np.int64), np.array([7]), np.array([2, 2, 2]), np.arange(10)[::-1],
    np.random.default_rng(0).integers(0, 50, (7, 9)), np.random.default_rng(1).integers(0, 10**6, 10**5),
    np.random.default_rng(2).integers(-5, 5, 40).astype(np.int32), [4, 1, 4, 0],
])
def test_unique_ids_equals_numpy_unique(ids):
    got, want = unique_ids(ids), np.unique(ids)
    assert got.dtype == want.dtype and np.array_equal(got, want)


def test_union_ids_equals_numpy_union1d():
    rng = np.random.default_rng(3)
    for a, b in ((rng.integers(0, 100, 50), rng.integers(50, 200, (7, 10))), (np.array([], np.int64), np.array([3, 1, 3])),
                 (np.array([5]), np.array([], np.int64))):
        got, want = union_ids(a, b), np.union1d(a, b)
        assert got.dtype == want.dtype and np.array_equal(got, want)
