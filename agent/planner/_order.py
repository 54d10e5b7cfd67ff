"""A stable integer argsort faster than numpy's for a tick's few thousand keys (the successor
columns' and the dead-end peel's order, every tick)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]


def stable_argsort(keys: npt.NDArray[np.integer[Any]]) -> I64:
    """``np.argsort(keys, kind="stable")`` of integer keys, the same permutation (a stable
    order is unique) in a tenth of the time on a tick's few thousand keys: keys spanning at
    most 2**16 values are shifted into ``uint16``, which numpy sorts stably by radix (int64
    keys go to timsort, 0.4 ms for 5,000); wider ones are made unique with their position,
    ``key * m + i``, and sorted by numpy's unstable (vectorised) sort."""
    a = np.asarray(keys)
    m = int(a.shape[0])
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(a.min()), int(a.max())
    if hi - lo < 1 << 16:
        return np.argsort((a - lo).astype(np.uint16), kind="stable").astype(np.int64)
    if (hi - lo + 1) * m < 1 << 62:
        key = (a.astype(np.int64) - lo) * m + np.arange(m, dtype=np.int64)
        key.sort()
        return np.asarray(key % m, dtype=np.int64)
    return np.argsort(a, kind="stable").astype(np.int64)
