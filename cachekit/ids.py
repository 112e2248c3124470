"""Sorted distinct video indices, by sorting: NumPy 2.3+ finds ``np.unique``'s values through a
hash table, which on 800,000 distinct indices took 0.56 s where a sort and a comparison of
neighbours take 6 ms (NumPy 2.4, 2 cores); ``train`` on a million-video store called it 24 times
(4.3 s). Same values and dtype as ``np.unique`` / ``np.union1d`` of 1-D arrays."""

from __future__ import annotations

import numpy as np


def unique_ids(ids) -> np.ndarray:
    """The distinct values of ``ids`` (any shape), sorted: ``np.unique(ids)``."""
    a = np.sort(np.asarray(ids).ravel())  # [N]
    if a.size < 2:
        return a
    keep = np.empty(a.size, bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def union_ids(a, b) -> np.ndarray:
    """The sorted distinct values of ``a`` and ``b``: ``np.union1d(a, b)``."""
    return unique_ids(np.concatenate([np.asarray(a).ravel(), np.asarray(b).ravel()]))
