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
goes on there. Pure: it depends on the prepared graph and the allowed mask alone, so it is
cached per prepared graph and mask, shared by the tables solved on that graph and by a cab's
view of one with the fleet (:func:`agent.planner.fleet.with_fleet`: the simulator's thousands
of per-cab tables a tick peel once, not once each). Where the C walk is built the peel runs
in C in one go (:func:`agent.planner.peel_c.live_links`: a queue, the same set); else a radius
graph (fresh every fix, so never a hit there) reads its parent's live links, peeled once per
closure state, restricted, and the few links dead in the parent that reach the radius graph's
edge (:func:`_from_parent`).
"""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.planner import peel_c
from agent.planner._order import stable_argsort as _stable_argsort
from agent.planner.core import Prepared, ValueTable, _own_sorted_arcs
from agent.planner.inputs import Bool
from tiles import tags as T
from tiles.graph import Graph

_CACHE: weakref.WeakKeyDictionary[Prepared, dict[bytes, Bool]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
_PER_PREP = 8  # masks kept per prepared graph (they change with the no-entry windows only)


def live_links(table: ValueTable, minute_of_week: float) -> Bool:
    """Per local link of ``table``'s graph: can a route go on from its end without a U-turn,
    on links allowed at ``minute_of_week``, without end (module docstring)? Read-only.

    Cached per prepared graph and allowed mask. Peeled in C where the walk is built
    (:func:`agent.planner.peel_c.live_links`, 10-20 µs on a 3 km radius graph); else a radius
    graph (``Graph.subset_of``, fresh every fix) from its parent's live links
    (:func:`_from_parent`), any other by :func:`_peel_arcs`."""
    allowed = np.asarray(table.allowed_at(minute_of_week), dtype=bool)
    key = allowed.tobytes()
    prep = table.prep
    hit = _recall(_CACHE, prep, key)
    if hit is not None:
        return hit
    live = peel_c.live_links(prep, allowed)  # in C where the walk is built
    if live is None:
        live = _from_parent(prep.graph, allowed)
    if live is None:
        live = _peel_arcs(_arcs(prep), allowed)
    _keep(_CACHE, prep, key, live)
    return live


#: live links per owner (a prepared graph, a parent graph) and allowed mask
_Store = weakref.WeakKeyDictionary[Any, dict[bytes, Bool]]


def _recall(store: _Store, owner: Any, key: bytes) -> Bool | None:
    """The live links kept under ``key`` for ``owner``, or None."""
    with _LOCK:
        per = store.get(owner)
        return None if per is None else per.get(key)


def _keep(store: _Store, owner: Any, key: bytes, live: Bool) -> None:
    """``live`` (made read-only) under ``key`` for ``owner``, the oldest of more than
    ``_PER_PREP`` masks dropped."""
    live.flags.writeable = False
    with _LOCK:
        per = store.setdefault(owner, {})
        per[key] = live
        while len(per) > _PER_PREP:
            del per[next(iter(per))]


#: per parent graph (the graph of the tiles a radius graph is cut from), its live links per
#: lifted allowed mask (:func:`_from_parent`)
_PARENT: weakref.WeakKeyDictionary[Graph, dict[bytes, Bool]] = weakref.WeakKeyDictionary()
#: per parent graph, its cruisable links and the last mask lifted (the same closures: reused)
_PARENT_BASE: weakref.WeakKeyDictionary[Graph, list[Bool]] = weakref.WeakKeyDictionary()


def _from_parent(g: Graph, allowed: Bool) -> Bool | None:
    """:func:`_peel` of the radius graph ``g`` with ``allowed``, from its parent's live links
    (None when ``g`` is no subset in its parent's order).

    The parent is peeled once per *lifted* mask: the parent's links allowed as ``allowed``
    within ``g`` and as the last lifted mask (at first: cruisable) outside it; what the parent
    allows outside ``g`` does not change the result, and within one minute's closures the
    lifted mask is the same for every radius graph of a parent. Exact, not an approximation:

    - a link live in the parent is live in ``g``: its endless way on either stays in ``g`` or
      leaves it, and the last link of ``g`` on it has a legal turn off ``g`` (live there);
    - a link dead in the parent (allowed, no endless way on) is live in ``g`` only if a way on
      within ``g`` reaches a link with a legal turn off ``g``, over links that are dead in the
      parent too (a way on through a link live in the parent would make it live there).

    So the parent's live links restricted, and the few dead ones that reach the edge of ``g``
    over dead ones (tests/agent/test_deadends_cache.py compares it with :func:`_peel` of
    ``g``)."""
    if g.subset_of is None:
        return None
    parent, idx = g.subset_of
    if idx.shape[0] != g.n or (idx.shape[0] > 1 and not bool(np.all(idx[1:] > idx[:-1]))):
        return None
    with _LOCK:
        base = _PARENT_BASE.get(parent)
    if base is None:
        base = [np.asarray((parent.flags & T.CRUISE_FORBIDDEN) == 0, dtype=bool)]
    lifted = base[-1]
    if not np.array_equal(lifted[idx], allowed):
        lifted = lifted.copy()
        lifted[idx] = allowed
    key = lifted.tobytes()
    hit = _recall(_PARENT, parent, key)
    if hit is None:
        hit = _peel_arcs(_parent_arcs(parent), lifted)
        _keep(_PARENT, parent, key, hit)
        with _LOCK:
            _PARENT_BASE[parent] = [base[0], lifted]
    live = hit[idx]
    dead = np.flatnonzero(allowed & ~live)
    if dead.shape[0] == 0:
        return live
    # the legal turns of the links dead in the parent: off g (the network goes on there), or
    # forward (no U-turn) into another of them
    lo, hi = g.turn_offsets[dead], g.turn_offsets[dead + 1]
    size = hi - lo
    total = int(size.sum())
    if total == 0:
        return live
    which = np.repeat(np.arange(dead.shape[0]), size)
    to = g.local(g.turn_to[np.repeat(lo - np.cumsum(size) + size, size) + np.arange(total)])
    reached = np.zeros(dead.shape[0], dtype=bool)
    reached[which[to < 0]] = True
    pos = np.full(g.n, -1, dtype=np.int64)
    pos[dead] = np.arange(dead.shape[0])
    into = np.where(to >= 0, pos[np.where(to >= 0, to, 0)], -1)
    ok = into >= 0
    ok[ok] = g.v_node[to[ok]] != g.u_node[dead[which[ok]]]
    src, dst = which[ok], into[ok]
    while True:  # back from the links with a turn off g, over the forward turns among dead ones
        more = reached.copy()
        more[src[reached[dst]]] = True
        if np.array_equal(more, reached):
            break
        reached = more
    live = live.copy()
    live[dead[reached]] = True
    return live


class MinuteMasks:
    """What the route read-out reads of one minute of a table, kept as Python lists (an
    element of a list is read faster than one of an array) once the minute was read often
    enough to pay for the conversion (the simulator's cabs read one table's minutes thousands
    of times; the agent's tick reads a fresh table once): ``allowed_at`` of the minute and the
    :func:`live_links` of that mask. Both depend on the table's ``allowed``, ``minutes``,
    ``prep`` and ``monday`` and the minute's floor alone (``allowed_at`` reads nothing else),
    which key it; the arrays are held by weak references and checked on a hit (an id may be
    reused once its array is gone)."""

    __slots__ = ("allowed", "allowed_uses", "live", "live_uses", "refs")

    def __init__(self, table: ValueTable) -> None:
        self.refs = (
            weakref.ref(table.allowed),
            weakref.ref(table.minutes),
            weakref.ref(table.prep),
        )
        self.allowed: list[bool] | None = None
        self.live: list[bool] | None = None
        self.allowed_uses = self.live_uses = 0

    def holds(self, table: ValueTable) -> bool:
        a, m, p = self.refs
        return a() is table.allowed and m() is table.minutes and p() is table.prep


_MINUTES: dict[tuple[int, int, int, object, int], MinuteMasks] = {}
_MINUTES_MAX = 32
#: read-outs of a minute that read its arrays before they are kept as lists
_AS_LIST_AFTER = 3


#: the last minute :func:`_masks` gave, its floor and its table's ``monday``: looked at first
#: (a route reads a minute several times; the simulator's cabs on one table, the same ones)
_LAST_MASKS: tuple[MinuteMasks, int, object] | None = None


def _masks(table: ValueTable, minute_of_week: float) -> MinuteMasks:
    global _LAST_MASKS
    raw = math.floor(minute_of_week)
    last = _LAST_MASKS
    if last is not None and last[1] == raw and last[2] == table.monday and last[0].holds(table):
        return last[0]
    key = (id(table.allowed), id(table.minutes), id(table.prep), table.monday)
    full = (*key, raw)
    hit = _MINUTES.get(full)
    if hit is not None and hit.holds(table):
        _LAST_MASKS = (hit, raw, table.monday)
        return hit
    got = MinuteMasks(table)
    with _LOCK:
        _MINUTES[full] = got
        while len(_MINUTES) > _MINUTES_MAX:
            del _MINUTES[next(iter(_MINUTES))]
    _LAST_MASKS = (got, raw, table.monday)
    return got


def allowed_list(table: ValueTable, minute_of_week: float) -> list[bool] | Bool:
    """``table.allowed_at(minute_of_week)``, as a list once that minute was read more than
    :data:`_AS_LIST_AFTER` times (:class:`MinuteMasks`). Read-only."""
    at = _masks(table, minute_of_week)
    got = at.allowed
    if got is not None:
        return got
    at.allowed_uses += 1
    row = np.asarray(table.allowed_at(minute_of_week), dtype=bool)
    if at.allowed_uses > _AS_LIST_AFTER:
        at.allowed = row.tolist()
        return at.allowed
    return row


def live_list(table: ValueTable, minute_of_week: float) -> list[bool] | Bool:
    """:func:`live_links`, as a list once that minute was read more than
    :data:`_AS_LIST_AFTER` times (:class:`MinuteMasks`). Read-only."""
    at = _masks(table, minute_of_week)
    got = at.live
    if got is not None:
        return got
    at.live_uses += 1
    live = live_links(table, minute_of_week)
    if at.live_uses > _AS_LIST_AFTER:
        at.live = live.tolist()
        return at.live
    return live


@dataclass(frozen=True)
class _Arcs:
    """A prepared graph's forward turns (no U-turn) by their target, and its links with a
    legal turn onto a link outside the graph."""

    src: npt.NDArray[np.int64]  # forward turns, sources
    dst: npt.NDArray[np.int64]  # ... and targets
    in_src: npt.NDArray[np.int64]  # the sources of the forward turns into each link ...
    in_offsets: npt.NDArray[np.int64]  # ... link f's from in_offsets[f] to in_offsets[f + 1]
    beyond: Bool


_ARCS: weakref.WeakKeyDictionary[Prepared, _Arcs] = weakref.WeakKeyDictionary()
_PARENT_ARCS: weakref.WeakKeyDictionary[Graph, _Arcs] = weakref.WeakKeyDictionary()


def _arcs(prep: Prepared) -> _Arcs:
    with _LOCK:
        hit = _ARCS.get(prep)
    if hit is not None:
        return hit
    arcs = _arcs_of(prep.graph, prep.arc_src, prep.arc_dst)
    with _LOCK:
        _ARCS[prep] = arcs
    return arcs


def _parent_arcs(g: Graph) -> _Arcs:
    """:func:`_arcs` of a graph that is not prepared (the parent of radius graphs)."""
    with _LOCK:
        hit = _PARENT_ARCS.get(g)
    if hit is not None:
        return hit
    arcs = _arcs_of(g, *_own_sorted_arcs(g))
    with _LOCK:
        _PARENT_ARCS[g] = arcs
    return arcs


def _arcs_of(g: Graph, src: npt.NDArray[np.int64], dst: npt.NDArray[np.int64]) -> _Arcs:
    forward = g.v_node[dst] != g.u_node[src]  # not back along the link the cab came by
    src, dst = src[forward], dst[forward]
    # a legal turn onto a link not loaded: the network goes on beyond the planned graph
    counts = np.diff(g.turn_offsets)
    outside = g.local(g.turn_to) < 0
    beyond = np.zeros(g.n, dtype=bool)
    if outside.any():
        beyond[np.repeat(np.arange(g.n), counts)[outside]] = True
    in_offsets = np.zeros(g.n + 1, dtype=np.int64)
    np.cumsum(np.bincount(dst, minlength=g.n), out=in_offsets[1:])
    return _Arcs(src, dst, src[_stable_argsort(dst)], in_offsets, beyond)


def _peel(table: ValueTable, allowed: Bool) -> Bool:
    """:func:`_peel_arcs` of ``table``'s prepared graph."""
    return _peel_arcs(_arcs(table.prep), allowed)


def _peel_arcs(a: _Arcs, allowed: Bool) -> Bool:
    """The live links: the greatest set of allowed links each of which has a forward turn into
    the set or onto a link outside the graph. Peeled from the links with no allowed way on,
    then only around the links that died in the last round (each takes one way on from the
    sources of its turns): the same set as counting every link's ways on again until nothing
    changes, without a pass over every turn per round of the longest chain of dead ends."""
    n = a.beyond.shape[0]
    live = np.asarray(allowed, dtype=bool).copy()
    ways_on = np.bincount(a.src[live[a.dst]], minlength=n)  # forward turns into live links
    dying = np.flatnonzero(live & (ways_on == 0) & ~a.beyond)
    while dying.shape[0]:
        live[dying] = False
        lo, hi = a.in_offsets[dying], a.in_offsets[dying + 1]
        size = hi - lo
        total = int(size.sum())
        if total == 0:
            break
        # the turns into the links that died: their sources lose one way on each
        into = a.in_src[np.repeat(lo - np.cumsum(size) + size, size) + np.arange(total)]
        np.subtract.at(ways_on, into, 1)
        into = np.sort(into)  # unique, as np.unique would (which imports numpy.ma: not on tick 1)
        into = into[np.concatenate(([True], into[1:] != into[:-1]))]
        dying = into[live[into] & (ways_on[into] == 0) & ~a.beyond[into]]
    return live
