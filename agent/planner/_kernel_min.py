"""The minimal kernel compiled (numba): the per-layer successor maximum alone, the peer
``nagashi bench cruise`` reports the compiled pass against (``kernel_numba_ms``); compiled or
loaded on its first call (the bench warms it up; the agent never runs it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from agent.planner._kernel_arrays import columns_flat
from agent.planner._kernel_numba import njit, rank_max

if TYPE_CHECKING:
    from agent.planner.core import _Kernel


@njit
def _successor_max_layers(  # pragma: no cover - compiled
    K: int, q_ext: Any, col_flat: Any, col_start: Any, col_len: Any, best: Any
) -> None:
    """The pass's own successor maximum (:func:`agent.planner._kernel_numba.rank_max`)
    alone, ``K`` times over the same ``Q``."""
    for _ in range(K):
        rank_max(best, q_ext, col_flat, col_start, col_len)


def successor_max_only(kn: _Kernel) -> Any:
    """The minimal kernel compiled: per layer only the successor maximum of the backward
    pass, over the same columns and layers as ``agent.bench_cruise.successor_max_kernel``
    (numpy) and on the same ``Q = -cost`` (the peer the compiled pass is reported against).
    Returns the sources' maximum (``np.maximum`` per out-degree rank: the same values)."""
    col_flat, col_start, lens = columns_flat(kn)
    q_ext = np.full(kn.cz.shape[0] + 1, -np.inf, dtype=np.float64)
    q_ext[:-1] = -np.asarray(kn.cost, dtype=np.float64)
    best = np.empty(int(lens[0]), dtype=np.float64)
    _successor_max_layers(int(kn.n_layers), q_ext, col_flat, col_start, lens, best)
    return best
