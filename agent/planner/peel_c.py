"""The dead-end peel in C (``_walk.c``'s ``nagashi_live``, loaded with the walk by
:mod:`agent.planner.walk_c`): :func:`agent.planner.deadends.live_links` of a whole graph in one
go, the same greatest set as ``deadends._peel_arcs`` (tests/agent/test_deadends_cache.py)."""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

from agent.planner import walk_c
from agent.planner.core import Prepared
from agent.planner.kernel_c import address
from agent.planner.walk_c import _c

_work = threading.local()


def live_links(prep: Prepared, allowed: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_] | None:
    """The live links of ``prep``'s graph with ``allowed`` (the links allowed at the minute),
    peeled in C (a queue over the forward turns; a link with a legal turn off the graph stays
    live); None where the C walk does not run."""
    if not walk_c.ready():
        return None
    g = prep.graph
    n = prep.n
    ok = np.ascontiguousarray(allowed, dtype=np.bool_)
    if ok.shape != (n,) or n + prep.arc_dst.shape[0] >= 2**31 - 1:  # (int32 work)
        return None
    arc_off = _c(prep.arc_offsets, np.int64)
    arc_dst = _c(prep.arc_dst, np.int64)
    turn_off = _c(g.turn_offsets, np.int64)
    u_node, v_node = _c(g.u_node, np.int32), _c(g.v_node, np.int32)
    live = np.empty(n, dtype=np.bool_)
    size = 3 * n + 1 + arc_dst.shape[0]
    work: npt.NDArray[np.int32] | None = getattr(_work, "peel", None)
    if work is None or work.shape[0] < size:  # this thread's, kept: no page faults per tick
        work = _work.peel = np.empty(max(size, 2 * (0 if work is None else work.shape[0])),
                                     dtype=np.int32)  # fmt: skip
    walk_c.library().nagashi_live(
        n, address(arc_off), address(arc_dst), address(turn_off), address(u_node),
        address(v_node), address(ok), address(live), address(work),
    )  # fmt: skip
    return live
