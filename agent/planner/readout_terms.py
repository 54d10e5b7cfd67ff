"""The read-out's terms of ``Q`` per table and layer, and each link's facts per prepared graph
(split from :mod:`agent.planner.readout`, which walks the route with them): the terms that do not
depend on the pickup probability, per link on demand or per layer at once (the same bits), and
a link's successors, nodes, length and time as Python values.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict

import numpy as np

from agent.planner.core import F64, Prepared, ValueTable, _interp

#: per solved table (its values and what :func:`action_values` reads besides ``P``), the terms
#: of ``Q`` that do not depend on the pickup probability, per layer: a few recent tables
Terms = tuple[list[float], list[float], list[float]]
#: one link's terms at one layer: ``F + C``, ``V`` after the link, the driving cost
LinkTerms = tuple[float, float, float]
_TERMS: OrderedDict[int, tuple[tuple[object, ...], dict[int, _LayerTerms]]] = OrderedDict()
_TERMS_MAX = 4
#: a layer asked more than ``n / _FULL_SHARE`` times (the simulator's many cabs on one
#: table) computes every link at once; fewer (one cab's read-out: a few per layer) one at a time
#: (on the Manhattan graph, 3,431 links: after 26 asks; a whole-fleet run of 1,000 cabs then
#: computes 5 % more whole layers than after 107 asks, and asks a layer link by link a quarter
#: as often)
_FULL_SHARE = 128
_FULL_MIN = 16


class _LayerTerms:
    """The terms of one layer ``k`` of a table: per link on demand (:func:`_link_terms`, on
    Python floats), or for every link at once (:func:`_terms_at`) once many links were asked
    for. Both give the same bits per link (the same IEEE operations in the same order).
    ``rows``: the whole layer's per link, once computed (``full``'s columns as tuples)."""

    __slots__ = ("asked", "full", "k", "limit", "rows", "some", "table")

    def __init__(self, table: ValueTable, k: int) -> None:
        self.table = table
        self.k = k
        self.full: Terms | None = None
        self.rows: list[LinkTerms] | None = None
        self.some: dict[int, LinkTerms] = {}
        self.limit = max(_FULL_MIN, table.prep.n // _FULL_SHARE)
        self.asked = 0  # links asked for so far, again or not

    def at(self, f: int) -> LinkTerms:
        rows = self.rows
        if rows is not None:
            return rows[f]
        # (the many cabs of the simulator ask for the same few links again and again: the
        # whole layer once they asked ``limit`` times, not once ``limit`` distinct links)
        self.asked = asked = self.asked + 1
        got = self.some.get(f)
        if got is None:
            got = _link_terms(self.table, self.k, f)
            self.some[f] = got
        if asked > self.limit:
            full = _terms_at(self.table, self.k)
            self.full, self.rows = full, list(zip(*full, strict=True))
            self.some = {}
        return got


#: the last table a read-out saw and its terms (any thread's: a pair, replaced at once)
_LAST: tuple[ValueTable | None, dict[int, _LayerTerms]] = (None, {})
#: one link's facts (:func:`link_facts`)
LinkFacts = tuple[list[int], int, int, float, float, list[int]]
#: per prepared graph, the facts of the links read so far (filled on demand: one cab's read-out
#: visits a few dozen links; the simulator's thousands of cabs on one graph revisit the same
#: ones), and the last graph's, looked up first
_FACTS: weakref.WeakKeyDictionary[Prepared, dict[int, LinkFacts]] = weakref.WeakKeyDictionary()
_FACTS_LAST: tuple[Prepared | None, dict[int, LinkFacts]] = (None, {})
_LOCK = threading.Lock()


def _facts_of(prep: Prepared) -> dict[int, LinkFacts]:
    global _FACTS_LAST
    last = _FACTS_LAST
    if last[0] is prep:
        return last[1]
    with _LOCK:
        got = _FACTS.get(prep)
        if got is None:
            got = _FACTS[prep] = {}
    _FACTS_LAST = (prep, got)
    return got


def _fill(prep: Prepared, facts: dict[int, LinkFacts], e: int) -> LinkFacts:
    g = prep.graph
    lo, hi = int(prep.arc_offsets[e]), int(prep.arc_offsets[e + 1])
    succ: list[int] = prep.arc_dst[lo:hi].tolist()
    u = int(g.u_node[e])
    v_node = g.v_node
    got = (
        succ,
        u,
        int(v_node[e]),
        float(prep.length_m[e]),
        float(prep.tau_s[e]),
        [f for f in succ if v_node[f] != u],
    )
    facts[e] = got
    return got


def link_facts(prep: Prepared, e: int) -> LinkFacts:
    """Link ``e`` of ``prep``: its successors (``arc_dst`` in order), its start and end nodes,
    its length and traversal time (the same values as the arrays'), and its successors that
    are no U-turn (whose end is not its start), in order. Read-only."""
    facts = _facts_of(prep)
    return facts.get(e) or _fill(prep, facts, e)


def link_facts_of(prep: Prepared) -> dict[int, LinkFacts]:
    """The facts of ``prep``'s links read so far, by link (:func:`link_facts` fills it): a
    hot loop looks a link up there first, :func:`link_facts` where it is missing. Read-only."""
    return _facts_of(prep)


def _terms_of(table: ValueTable) -> dict[int, _LayerTerms]:
    """The per-layer terms kept for ``table`` (:func:`_layer_terms`), by layer."""
    global _LAST
    last = _LAST
    if last[0] is table:
        return last[1]
    layers = _table_terms(table)
    _LAST = (table, layers)
    return layers


def _layer_terms(table: ValueTable, k: int) -> _LayerTerms:
    """At layer ``k``, per link ``f``: ``F_f + C_f`` (the fare and the value after the
    drop-off), ``V`` after driving ``f``, and ``f``'s driving cost, computed as
    :func:`action_values` computes them (the same bits per element) and kept for the table:
    the tables a read-out sees with the fleet (:func:`agent.planner.fleet.with_fleet`) change
    ``P`` only, so the cabs of one tick share them."""
    layers = _terms_of(table)
    got = layers.get(k)
    if got is None:
        got = layers[k] = _LayerTerms(table, k)
    return got


def _table_terms(table: ValueTable) -> dict[int, _LayerTerms]:
    """The per-layer terms kept for ``table``'s values and inputs (a new entry: none yet)."""
    inputs = (
        table.values,
        table.cont,
        table.fare,
        table.cost,
        table.cell,
        table.trip_layers,
        table.slope_v,
        table.slope_c,
        table.prep.tau_s,
    )
    key = id(table.values)
    hit = _TERMS.get(key)
    if hit is None or any(a is not b for a, b in zip(hit[0], inputs, strict=True)):
        hit = (inputs, {})
        _TERMS[key] = hit
        while len(_TERMS) > _TERMS_MAX:
            _TERMS.popitem(last=False)
    return hit[1]


def _terms_at(table: ValueTable, k: int) -> Terms:
    prep = table.prep
    n = prep.n
    links = np.arange(n, dtype=np.int64)
    shift = prep.tau_s / prep.step_s
    v_next = _interp(table.values.reshape(-1), n, k, shift, links, table.slope_v[k])
    c_next = _interp(
        table.cont.reshape(-1),
        table.cont.shape[1],
        k,
        shift + table.trip_layers,
        table.cell,
        table.slope_c[k],
    )
    return (table.fare + c_next).tolist(), v_next.tolist(), table.cost.tolist()


def _interp_at(table2d: F64, k: int, x: float, col: int, slope: float) -> float:
    """:func:`agent.planner.core._interp` of one column of a ``(rows, width)`` array on Python
    floats: the same operations in the same order (``floor``, ``max``, the truncation to a row,
    the clamp of the lower row, the same elements as the flat offsets there)."""
    a = max(float(math.floor(x)), 1.0)
    w = x - a
    lo = min(int(float(k) + a), table2d.shape[0] - 2)
    v0 = float(table2d[lo, col])
    if w >= 0.0:
        return v0 + w * (float(table2d[lo + 1, col]) - v0)
    return v0 + -w * slope


def _link_terms(table: ValueTable, k: int, f: int) -> LinkTerms:
    """The terms of :func:`_terms_at` for the link ``f`` alone (the same bits)."""
    prep = table.prep
    shift = float(prep.tau_s[f]) / prep.step_s
    c_shift = shift + float(table.trip_layers[f])
    if not (math.isfinite(shift) and math.isfinite(c_shift)):  # as numpy does it, however odd
        full = _terms_at(table, k)
        return full[0][f], full[1][f], full[2][f]
    v_next = _interp_at(table.values, k, shift, f, float(table.slope_v[k]))
    c_next = _interp_at(table.cont, k, c_shift, int(table.cell[f]), float(table.slope_c[k]))
    return float(table.fare[f]) + c_next, v_next, float(table.cost[f])
