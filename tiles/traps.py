"""Closed traps of the road network: links a cruising cab can enter but never drive out of.

The states of the turn graph are directed links and its arcs the legal turns (turn
restrictions are absent turns; a U-turn is a turn where the tiles list it, at the end of a
spur). Over the links a cruising taxi may enter (:meth:`tiles.Graph.cruise_allowed`: never a
motorway, private road, pier or, at a given minute, a closed one) the *main* network is the
largest strongly connected component of that graph. A link is *trapped* when no legal turn
sequence over allowed links leads from it back into the main network: a one-way street into a
two-way service spur cut by the extract's edge (Midtown's 3355 -> 3402 <-> 3403, where a cab
follows the road between the spur's two directions for ever), a street that ends at the
extract's edge, or the links that lead only into those. A link from which the network goes on
beyond the loaded graph (a legal turn onto an edge not in it: a radius or tile subset) is not
trapped. A link that can reach the main network but not be reached from it (a street that
enters the extract at its edge) is not trapped either: a cab on it drives out.

In the real world the driver turns round or the road goes on beyond the extract; a simulated
cab or passenger is moved off a trap with :func:`escape_links` (``tools/sim``).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import numpy.typing as npt

from tiles.geo import LocalProjection
from tiles.graph import Graph

Bool = npt.NDArray[np.bool_]
I64 = npt.NDArray[np.int64]


def trapped_links(
    graph: Graph, minute_of_week: int | None = None, monday: dt.date | None = None
) -> Bool:
    """Per local link of ``graph``: is it a trap (module docstring)? Only links allowed by
    ``graph.cruise_allowed(minute_of_week, monday)`` can be trapped (the others are False:
    a cruising cab is never sent onto them); without a minute, the rules that hold at every
    minute (flags), so a no-entry window does not make a trap."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import breadth_first_order, connected_components

    n = graph.n
    allowed = np.asarray(graph.cruise_allowed(minute_of_week, monday), dtype=bool)
    trapped = np.zeros(n, dtype=bool)
    if not allowed.any():
        return trapped
    src, dst = graph.turn_pairs
    keep = allowed[src] & allowed[dst]
    src, dst = src[keep].astype(np.int64), dst[keep].astype(np.int64)
    turns = sp.csr_matrix((np.ones(src.size), (src, dst)), shape=(n, n))
    _, label = connected_components(turns, directed=True, connection="strong")
    sizes = np.bincount(label[allowed])
    main = allowed & (label == int(np.argmax(sizes)))
    # a legal turn onto an edge not loaded: the road network goes on beyond this graph
    counts = np.diff(graph.turn_offsets)
    beyond = np.zeros(n, dtype=bool)
    outside = graph.local(graph.turn_to) < 0
    if outside.any():
        beyond[np.repeat(np.arange(n), counts)[outside]] = True
    exits = np.flatnonzero(main | (beyond & allowed))
    # who reaches an exit: a search from a virtual node n over the reversed turns
    rs = np.concatenate([dst, np.full(exits.size, n, dtype=np.int64)])
    rd = np.concatenate([src, exits])
    back = sp.csr_matrix((np.ones(rs.size), (rs, rd)), shape=(n + 1, n + 1))
    reached = np.zeros(n + 1, dtype=bool)
    reached[breadth_first_order(back, n, directed=True, return_predecessors=False)] = True
    trapped = allowed & ~reached[:n]
    return trapped


def escape_links(graph: Graph, trapped: Bool, allowed: Bool | None = None) -> I64:
    """Per local link: itself where it is not trapped, else the nearest link that is
    ``allowed`` (default ``graph.cruise_allowed()``) and not trapped, by the straight distance
    from the trapped link's end to the other link's start (where a cab or passenger taken off
    the trap is put: the driver who turns round, the passenger who walks out of the spur); ties
    to the lower index; -1 for a trapped link when no link qualifies."""
    n = graph.n
    out = np.arange(n, dtype=np.int64)
    ok = np.asarray(graph.cruise_allowed() if allowed is None else allowed, dtype=bool)
    ok = ok & ~np.asarray(trapped, dtype=bool)
    stuck = np.flatnonzero(trapped)
    if stuck.size == 0:
        return out
    cand = np.flatnonzero(ok)
    if cand.size == 0:
        out[stuck] = -1
        return out
    proj = LocalProjection(float(graph.u_lon.mean()), float(graph.u_lat.mean()))
    sx, sy = proj.to_xy(graph.v_lon[stuck], graph.v_lat[stuck])
    cx, cy = proj.to_xy(graph.u_lon[cand], graph.u_lat[cand])
    for k, i in enumerate(stuck.tolist()):
        d2 = (cx - sx[k]) ** 2 + (cy - sy[k]) ** 2
        out[i] = int(cand[int(np.argmin(d2))])
    return out
