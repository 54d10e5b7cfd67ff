"""The route read-out of a solved :class:`~agent.planner.core.ValueTable`: the value of entering
a link at a layer (``Q``), the best next link, and the route followed from the cab's link (no
U-turn, a bounded number of visits per link, the route's own passes counted as vacant passes).
"""

from __future__ import annotations

import math
import weakref

import numpy as np

from agent.planner import walk_c
from agent.planner.core import F64, I64, Prepared, ValueTable, _interp
from agent.planner.deadends import allowed_list, live_list
from agent.planner.inputs import Bool
from agent.planner.readout_terms import _LOCK, LinkFacts, _facts_of, _fill, _LayerTerms, _terms_of
from agent.planner.readout_terms import link_facts as link_facts
from agent.planner.readout_terms import link_facts_of as link_facts_of
from agent.planner.spread import SPREAD_PERIOD_MIN as SPREAD_PERIOD_MIN
from agent.planner.spread import Spread as Spread
from agent.planner.spread import spread_hash as spread_hash
from agent.planner.spread import spread_salt_of as spread_salt_of


def action_values(table: ValueTable, layer: int, links: I64, age_s: F64 | None = None) -> F64:
    """Q of entering each of ``links`` at ``layer`` (no legality mask applied).

    ``age_s`` (per link of ``links``, optional): seconds since a vacant cab last passed the
    link, when known (the cab's own history, or the fleet's): the waiting hails then built up
    for ``min(W, age)`` only, not ``W``. Without it, the table's own ``pass_age_s`` (the
    passes it was solved with, aged to ``layer``) applies, as in the values."""
    prep = table.prep
    dt = prep.step_s
    k = min(max(layer, 0), table.n_layers - 1)
    n = prep.n
    nc = table.cont.shape[1]
    step_shift = prep.tau_s[links] / dt
    v_next = _interp(table.values.reshape(-1), n, k, step_shift, links, table.slope_v[k])
    c_next = _interp(
        table.cont.reshape(-1),
        nc,
        k,
        step_shift + table.trip_layers[links],
        table.cell[links],
        table.slope_c[k],
    )
    if age_s is None and table.pass_age_s is not None:
        age_s = table.pass_age_s[links] + max(layer, 0) * dt
    p = table.pickup_prob[table.layer_slot[k], links]
    if age_s is not None:
        age = np.maximum(np.asarray(age_s, dtype=np.float64), 0.0)
        w = table.window_s[links]
        rate = table.rate_h[table.layer_slot[k], links]
        depleted = -np.expm1(-rate * ((prep.tau_s[links] + np.minimum(w, age)) / 3600.0))
        p = np.where(age < w, depleted, p)
    return np.asarray(p * (table.fare[links] + c_next) + (1.0 - p) * v_next - table.cost[links])


class _Walk:
    """One read-out's view of ``table`` and the passes it counts (:func:`successor_values`,
    :func:`follow`): what every step reads, looked up once, the allowed mask of the minute of
    the last step (a route spends several steps in one minute) and the terms and slot of the
    layer of the last step (a route spends a few steps in one layer)."""

    __slots__ = (
        "at_k", "dt", "facts", "last_pass", "layers", "mask", "minute0", "own", "pass_age",
        "prep", "prob", "rate_h", "raw", "slot", "slots", "table", "tau", "terms", "top",
        "window_s", "with_age",
    )  # fmt: skip

    def __init__(
        self, table: ValueTable, last_pass_s: F64 | None, own_passes: dict[int, float] | None
    ) -> None:
        self.table = table
        self.prep = table.prep
        self.dt = table.prep.step_s
        self.facts = _facts_of(table.prep)
        self.layers = _terms_of(table)
        self.minute0 = table.start_minute_of_week
        self.top = table.n_layers - 1
        self.last_pass = last_pass_s
        self.own = own_passes
        self.pass_age = table.pass_age_s
        self.prob, self.window_s, self.rate_h = table.pickup_prob, table.window_s, table.rate_h
        self.with_age = last_pass_s is not None or bool(own_passes) or self.pass_age is not None
        self.raw = -1.5  # the minute (floor) of ``mask``: none yet
        self.mask: list[bool] | Bool = []
        self.slots: list[int] | None = None
        self.at_k = -1  # the layer of ``terms`` and ``slot``: none yet
        self.terms: _LayerTerms | None = None
        self.slot = 0
        self.tau: list[float] | None = None

    def fact(self, e: int) -> LinkFacts:
        return self.facts.get(e) or _fill(self.prep, self.facts, e)

    def _layer(self, k: int) -> _LayerTerms:
        """The terms of layer ``k`` (kept for the table) and its slot, kept for the next step."""
        terms = self.layers.get(k)
        if terms is None:
            terms = self.layers[k] = _LayerTerms(self.table, k)
        slots = self.slots
        if slots is None:
            slots = self.slots = self.table.layer_slot.tolist()
        self.terms, self.slot, self.at_k = terms, slots[k], k
        return terms

    def scores(self, succ: list[int], t_rel_s: float) -> list[tuple[int, float]]:
        """``(f, Q_f)`` of the links of ``succ`` that may be entered at ``t_rel_s``, in order:
        :func:`successor_values`' operations, in the same order (``b if b > a else a`` is
        ``max(a, b)``, ``b if b < a else a`` is ``min(a, b)``, NaN and signed zeros alike)."""
        minute = self.minute0 + t_rel_s / 60.0
        raw = math.floor(minute)
        if raw != self.raw:
            self.mask, self.raw = allowed_list(self.table, minute), raw
        mask = self.mask
        layer = math.floor(t_rel_s / self.dt + 0.5)
        k = layer if layer > 0 else 0
        if k > self.top:
            k = self.top
        terms = self.terms if k == self.at_k else self._layer(k)
        assert terms is not None
        slot = self.slot
        prob = self.prob
        rows = terms.rows
        scored: list[tuple[int, float]] = []
        if not self.with_age:
            for f in succ:
                if not mask[f]:
                    continue
                p = prob.item(slot, f)
                gain, v_next, cost = terms.at(f) if rows is None else rows[f]
                scored.append((f, p * gain + (1.0 - p) * v_next - cost))
            return scored
        window_s, rate_h = self.window_s, self.rate_h
        last_pass, own, pass_age = self.last_pass, self.own, self.pass_age
        tau = self.tau
        for f in succ:
            if not mask[f]:
                continue
            p = prob.item(slot, f)
            # (``item``: the same Python float as ``float(last_pass[f])``, no 0-d scalar)
            last = last_pass.item(f) if last_pass is not None else -math.inf
            if pass_age is not None:
                b = -pass_age.item(f)
                last = b if b > last else last
            if own and f in own:
                b = own[f]
                last = b if b > last else last
            age = t_rel_s - last
            age = 0.0 if age < 0.0 else age
            window = window_s.item(f)
            if age < window:  # (then min(window, age) is age)
                if tau is None:
                    tau = self.tau = _tau_list(self.prep)
                rate = rate_h.item(slot, f)
                p = float(-_expm1(-rate * ((tau[f] + age) / 3600.0)))
            gain, v_next, cost = terms.at(f) if rows is None else rows[f]
            scored.append((f, p * gain + (1.0 - p) * v_next - cost))
        return scored


#: per prepared graph, ``tau_s`` as a list (the same floats as ``float(tau_s[f])``)
_TAU: weakref.WeakKeyDictionary[Prepared, list[float]] = weakref.WeakKeyDictionary()


def _tau_list(prep: Prepared) -> list[float]:
    got = _TAU.get(prep)
    if got is None:
        got = prep.tau_s.tolist()
        with _LOCK:
            _TAU[prep] = got
    return got


_expm1 = np.expm1


def _best(scored: list[tuple[int, float]]) -> tuple[int, float]:
    """The first successor of the highest ``Q`` (-1 when none)."""
    best_f = -1
    best_q = -math.inf
    for f, q in scored:
        if best_f < 0 or q > best_q:
            best_f, best_q = f, q
    return best_f, best_q


def best_next(
    table: ValueTable,
    link: int,
    t_rel_s: float,
    last_pass_s: F64 | None = None,
    own_passes: dict[int, float] | None = None,
    skip: set[int] | None = None,
) -> int:
    """Best legal successor of ``link`` when leaving it ``t_rel_s`` after the table's start,
    or -1 when none may be entered (never returns a link that is not allowed then).

    ``last_pass_s`` (per local link, seconds after the table's start, ``-inf`` if unknown) and
    ``own_passes`` (the same, overriding) give the time of the last vacant pass of each link;
    the passes the table was solved with (``table.pass_age_s``) count too.
    ``skip``: local links not to enter (the route read-out's U-turns and revisits).

    The maximum of :func:`action_values` over the allowed successors (the first of equal
    ones), evaluated one successor at a time on Python floats (:func:`successor_values`)."""
    return _best(successor_values(table, link, t_rel_s, last_pass_s, own_passes, skip))[0]


def successor_values(
    table: ValueTable,
    link: int,
    t_rel_s: float,
    last_pass_s: F64 | None = None,
    own_passes: dict[int, float] | None = None,
    skip: set[int] | None = None,
) -> list[tuple[int, float]]:
    """``(f, Q_f)`` of each successor ``f`` of ``link`` that may be entered when leaving it
    ``t_rel_s`` after the table's start (not in ``skip``), in the graph's successor order; the
    arguments are :func:`best_next`'s.

    :func:`action_values` one successor at a time on Python floats: a junction has two or
    three successors, where numpy's per-call overhead was most of the route read-out's time.
    Same operations in the same order, and the depleted probability through ``np.expm1`` as
    there, so the same bits (tests/agent/test_readout_scalar.py compares both)."""
    walk = _Walk(table, last_pass_s, own_passes)
    out = walk.fact(link)[0]
    if skip:
        out = [f for f in out if f not in skip]
    return walk.scores(out, t_rel_s) if out else []


def spread_next(
    table: ValueTable,
    link: int,
    t_rel_s: float,
    last_pass_s: F64 | None,
    own_passes: dict[int, float] | None,
    skip: set[int] | None,
    spread: Spread,
) -> int:
    """:func:`best_next`, spread (:class:`Spread`): among the successors within the margin of
    the best, the one whose :func:`spread_hash` (the cab's salt, the successor, the period) is
    lowest. ``eps = 0`` is :func:`best_next` exactly."""
    scored = successor_values(table, link, t_rel_s, last_pass_s, own_passes, skip)
    return _spread_choice(table, scored, t_rel_s, spread)


def _spread_choice(
    table: ValueTable, scored: list[tuple[int, float]], t_rel_s: float, spread: Spread
) -> int:
    """:func:`spread_next`'s choice among ``scored`` (:func:`successor_values`)."""
    best_f, best_q = _best(scored)
    if len(scored) < 2 or spread.eps <= 0.0:
        return best_f
    floor = best_q - spread.eps * abs(best_q)
    near = [best_f] + [f for f, q in scored if f != best_f and q > floor]
    if len(near) < 2:
        return best_f
    # the near-best successor this cab ranks first (rendezvous hashing: when a successor enters
    # or leaves the near set, the choice changes only if it is the one ranked first)
    ids = table.prep.graph.edge_id
    period = math.floor((table.start_minute_of_week + t_rel_s / 60.0) / SPREAD_PERIOD_MIN)
    return min(near, key=lambda f: spread_hash(spread.salt, int(ids[f]), period))


def _choose(
    table: ValueTable,
    scored: list[tuple[int, float]],
    live: list[bool] | Bool | None,
    visits: dict[int, int] | None,
    spread: Spread | None,
    t_rel_s: float,
) -> int:
    """:func:`follow`'s choice at a junction among its ``scored`` successors: with ``live``
    (from a link that is no dead end) none that is; with ``visits``, one not on the route yet
    while there is one; the best (:func:`best_next`) or the spread's (:func:`spread_next`)."""
    if live is not None:
        scored = [fq for fq in scored if live[fq[0]]]
    if visits is None:
        return (
            _best(scored)[0] if spread is None else _spread_choice(table, scored, t_rel_s, spread)
        )
    if spread is None:  # both maxima in one pass: the first of the highest Q, unvisited or not
        best_f, best_q, new_f, new_q = -1, -math.inf, -1, -math.inf
        for f, q in scored:
            if best_f < 0 or q > best_q:
                best_f, best_q = f, q
            if f not in visits and (new_f < 0 or q > new_q):
                new_f, new_q = f, q
        return new_f if new_f >= 0 else best_f
    f = _spread_choice(table, [fq for fq in scored if fq[0] not in visits], t_rel_s, spread)
    return f if f >= 0 else _spread_choice(table, scored, t_rel_s, spread)


def follow(
    table: ValueTable,
    start: int,
    t0_rel_s: float,
    min_length_m: float,
    min_duration_s: float,
    max_edges: int,
    last_pass_s: F64 | None = None,
    max_visits: int = 0,
    prefix: tuple[int, ...] = (),
    spread: Spread | None = None,
) -> tuple[list[int], float, float]:
    """Route read out of the table's policy: (local links, length_m, duration_s). The route's
    own earlier passes count as vacant passes (a block driven twice finds fewer hails).

    ``max_visits`` > 0: the route enters no link that it (counting the start link) already
    holds that often, and makes no U-turn (back along the link it came by); where only such a
    move is left, the route ends. With ``max_visits`` > 1 it enters a link it already holds
    only where every other move is barred. This is the shape safety/ shows (``RouteConfig``):
    the MDP's state cannot know that the route itself drained a curb a few minutes before
    (only the cab's past passes, ``table.pass_age_s``), so its policy alone may circle one
    block. From a link that is not a dead end itself it enters none
    (:mod:`agent.planner.deadends`: a link the route could only leave by a U-turn, or not at
    all): where only dead ends are left, the route ends before them (the cab would end there
    with no route to show).

    ``prefix``: local links the route enters first, as given (a route kept from the previous
    tick); the read-out continues from its last link. ``spread``: each step takes
    :func:`spread_next`'s successor, not :func:`best_next`'s (``route_spread_eps``).

    Each junction's successors are scored once (their ``Q`` does not depend on which of them
    are barred) and the choices above are made among them, in the same order. Without a spread
    and with ``max_visits`` > 0 the walk runs in C where it is built (:mod:`agent.planner.walk_c`,
    the same bits); elsewhere, and where that declines, in Python."""
    if spread is None and max_visits > 0:  # the walk in C where it is built (the same bits)
        got = walk_c.follow(
            table, start, t0_rel_s, min_length_m, min_duration_s, max_edges, last_pass_s,
            max_visits, prefix,
        )  # fmt: skip
        if got is not None:
            return got
    return _follow_py(
        table, start, t0_rel_s, min_length_m, min_duration_s, max_edges, last_pass_s,
        max_visits, prefix, spread,
    )  # fmt: skip


def _follow_py(
    table: ValueTable,
    start: int,
    t0_rel_s: float,
    min_length_m: float,
    min_duration_s: float,
    max_edges: int,
    last_pass_s: F64 | None,
    max_visits: int,
    prefix: tuple[int, ...],
    spread: Spread | None,
) -> tuple[list[int], float, float]:
    """:func:`follow` in Python (the reference the C walk is compared with)."""
    horizon_s = table.n_layers * table.prep.step_s
    own: dict[int, float] = {start: t0_rel_s}
    walk = _Walk(table, last_pass_s, own)
    facts, prep, scores = walk.facts, walk.prep, walk.scores
    route: list[int] = []
    length, t, e = 0.0, t0_rel_s, start
    live = (
        live_list(table, table.start_minute_of_week + t0_rel_s / 60.0) if max_visits > 0 else None
    )
    visits: dict[int, int] = {start: 1}
    for f in prefix:
        route.append(f)
        f_m, f_s = (facts.get(f) or _fill(prep, facts, f))[3:5]
        length += f_m
        t += f_s
        own[f] = t
        visits[f] = visits.get(f, 0) + 1
        e = f
    while len(route) < max_edges and t < horizon_s:
        if length >= min_length_m and t - t0_rel_s >= min_duration_s:
            break
        at = facts.get(e) or _fill(prep, facts, e)
        if live is None:
            f = _choose(table, scores(at[0], t), None, None, spread, t)
        else:  # no U-turn, no link held max_visits times
            succ = [f for f in at[5] if visits.get(f, 0) < max_visits]
            scored = scores(succ, t) if succ else []
            if spread is None:  # _choose's pass, here: the same choice without its call
                from_live = live[e]
                f, best_q, new_f, new_q = -1, -math.inf, -1, -math.inf
                for g, q in scored:
                    if from_live and not live[g]:
                        continue
                    if f < 0 or q > best_q:
                        f, best_q = g, q
                    if g not in visits and (new_f < 0 or q > new_q):
                        new_f, new_q = g, q
                if new_f >= 0:
                    f = new_f
            else:
                f = _choose(table, scored, live if live[e] else None, visits, spread, t)
        if f < 0:
            break  # nothing may be entered (or only a dead end is left: the route ends before)
        route.append(f)
        got = facts.get(f) or _fill(prep, facts, f)
        length += got[3]
        t += got[4]
        own[f] = t
        visits[f] = visits.get(f, 0) + 1
        e = f
    return route, length, t - t0_rel_s
