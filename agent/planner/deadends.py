"""Dead ends of the cruising graph: the links a route may enter but never leave again.

A route read out of the table (:func:`agent.planner.readout.follow`) makes no U-turn, and the
safety gate shows none (``safety.RouteConfig.max_u_turns = 0``). A link from which every way
on is a U-turn (a service spur, a cul-de-sac), or none (a street cut by the edge of the
extract, a one-way street into a pedestrian plaza), or only into such links, is a *dead end*:
a route that enters it ends there, the cab drives in, and at its end no route can be given:
the tick falls back to "follow the road" (``ROUTE_MISSING``) until the driver has turned
round by himself. The tiles list the U-turn as a legal turn where it is the only way on, so
the table's values count it; the read-out must not.

:func:`live_links` is the complement: the links from which a route can go on without a U-turn
for as long as it likes, over links allowed at that minute. It peels the graph: a link stays
live while one of its successors (not a U-turn, allowed) is live. A link with a legal turn
onto a link outside the planned graph (the planner's radius) stays live: the road network
goes on there. Pure, cached per table and minute.
"""

from __future__ import annotations

import math
import threading
import weakref

import numpy as np

from agent.planner.core import ValueTable
from agent.planner.inputs import Bool

_CACHE: weakref.WeakKeyDictionary[ValueTable, dict[int, Bool]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
_PER_TABLE = 8  # minutes kept per table (a route read-out spans a few)


def live_links(table: ValueTable, minute_of_week: float) -> Bool:
    """Per local link of ``table``'s graph: can a route go on from its end without a U-turn,
    on links allowed at ``minute_of_week``, without end (module docstring)? Read-only."""
    minute = math.floor(minute_of_week)
    with _LOCK:
        hit = _CACHE.get(table, {}).get(minute)
    if hit is not None:
        return hit
    live = _peel(table, table.allowed_at(minute_of_week))
    live.flags.writeable = False
    with _LOCK:
        per = _CACHE.setdefault(table, {})
        per[minute] = live
        while len(per) > _PER_TABLE:
            del per[next(iter(per))]
    return live


def _peel(table: ValueTable, allowed: Bool) -> Bool:
    prep = table.prep
    g = prep.graph
    src, dst = prep.arc_src, prep.arc_dst
    forward = g.v_node[dst] != g.u_node[src]  # not back along the link the cab came by
    src, dst = src[forward], dst[forward]
    # a legal turn onto a link not loaded: the network goes on beyond the planned graph
    counts = np.diff(g.turn_offsets)
    outside = g.local(g.turn_to) < 0
    beyond = np.zeros(g.n, dtype=bool)
    if outside.any():
        beyond[np.repeat(np.arange(g.n), counts)[outside]] = True
    live = np.asarray(allowed, dtype=bool).copy()
    while True:
        ok = live[dst]
        has = np.bincount(src[ok], minlength=g.n) > 0
        nxt = live & (has | beyond)
        if np.array_equal(nxt, live):
            return live
        live = nxt
