"""Route stability: keep the route the driver was shown unless a new one is clearly better, and
never take back a manoeuvre the cab is committed to (issue 15). Pure functions of a solved
:class:`~agent.planner.core.ValueTable`, so the agent's tick and the simulator apply the same
rules.

* :func:`route_value`: the expected net revenue of driving a given sequence of links from the
  end of the cab's link, then the policy (the table's values) from the last one:

      R_n = V(f_n, t_n + τ_n)                           (the policy after the route)
      R_{i-1} = −cost_i + P_i (F_i + C_i) + (1 − P_i) R_i

  with ``P_i`` the pickup probability of entering ``f_i`` at ``t_i``, depleted by the table's
  recent passes and by the route's own earlier passes (``min(W, t_i − last pass)``), ``C_i``
  the value after a drop-off from ``f_i``'s cell. For the greedy read-out this is the value of
  the route shown; for the previous route it is what keeping it is worth now.
* :func:`choose_route`: the hysteresis: the new route replaces the previous one only when
  ``R_new > R_old + margin · |R_old|`` (``PlannerParams.route_switch_margin``); and while the
  cab is committed to the previous route's next manoeuvre (it is less than
  ``route_commit_s`` seconds or ``route_commit_m`` metres from it, :func:`is_committed`), a new
  route that does not begin with the same links up to and through that manoeuvre is refused.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.planner import walk_c
from agent.planner.core import ValueTable, _interp
from agent.planner.deadends import allowed_list
from agent.planner.readout import link_facts, link_facts_of

#: why a tick's route is the one it is
NEW = "new"  # no previous route to keep (first tick, fallback before, cab left it)
SWITCHED = "switched"  # the new route is better by more than the margin
KEPT = "kept"  # the new route is not better by the margin: the previous one goes on
COMMITTED = "committed"  # the cab is at the previous route's next manoeuvre: no change
SAME = "same"  # the new route begins as the previous one did


@dataclass(frozen=True)
class RouteChoice:
    """The outcome of :func:`choose_route`: the local links to enter and why."""

    route: tuple[int, ...]
    reason: str
    value_new: float
    value_previous: float | None

    def to_json(self) -> dict[str, object]:
        return {
            "reason": self.reason,
            "value_new": round(self.value_new, 4),
            "value_previous": None
            if self.value_previous is None
            else round(self.value_previous, 4),
        }


def is_committed(
    distance_m: float, speed_mps: float | None, commit_s: float, commit_m: float
) -> bool:
    """Is the cab committed to a manoeuvre ``distance_m`` ahead: within ``commit_m`` metres,
    or within ``commit_s`` seconds at ``speed_mps`` (unknown speed: the distance alone)?"""
    if not math.isfinite(distance_m):
        return False
    speed = speed_mps if speed_mps is not None and math.isfinite(speed_mps) else 0.0
    return distance_m <= max(commit_m, max(speed, 0.0) * commit_s)


def route_value(table: ValueTable, start: int, t0_rel_s: float, route: Sequence[int]) -> float:
    """Expected net revenue of entering the local links ``route`` in order after ``start``
    (left ``t0_rel_s`` after the table's start), then following the policy (module
    docstring). An empty route is the policy's value ``V(start, t0)``.

    Evaluated one link at a time on Python floats (a route has a few dozen links, where
    numpy's per-call overhead was most of the time; the simulator values two routes per cab
    and table): the same IEEE operations in the same order as the array form (the entry
    times a running sum, as ``np.cumsum``), and the depleted probabilities through one
    ``np.expm1`` on a contiguous array, so the same bits
    (tests/tools/test_sim_speed_stability.py compares both). What a cab's view of the table
    shares with the table (:func:`agent.planner.fleet.with_fleet` changes ``P``, ``W`` and the
    pass ages only) is read from lists kept per table (:func:`_static`)."""
    if route:  # in C where it is built (agent.planner.walk_c: the same bits)
        got = walk_c.route_value(table, start, t0_rel_s, route)
        if got is not None:
            return got
    return _route_value_py(table, start, t0_rel_s, route)


def _route_value_py(table: ValueTable, start: int, t0_rel_s: float, route: Sequence[int]) -> float:
    """:func:`route_value` in Python (the reference the C walk is compared with)."""
    prep = table.prep
    dt = prep.step_s
    top = table.n_layers - 1
    k0 = min(max(math.floor(t0_rel_s / dt + 0.5), 0), top)
    if not route:
        return float(table.values[k0, start])
    st = _static(table)
    tau, layer_slot, cont, slope_c, cell = st.tau, st.layer_slot, st.cont, st.slope_c, st.cell
    shift_a, shift_w, last_row = st.shift_a, st.shift_w, st.last_row
    idx = np.asarray(route, dtype=np.int64)
    links: list[int] = idx.tolist()
    count = len(links)
    ages: list[float] | None = None if table.pass_age_s is None else table.pass_age_s[idx].tolist()
    ks: list[int] = [0] * count
    slots: list[int] = [0] * count
    since: list[float] = [0.0] * count
    c_next: list[float] = [0.0] * count
    # last vacant pass before each entry: the table's passes, then the route's own (start too)
    last: dict[int, float] = {int(start): t0_rel_s}
    run = 0.0  # the entry time's offset from t0: np.cumsum's running sum
    # (``b if b > a else a`` is ``max(a, b)``, ``b if b < a else a`` is ``min(a, b)``, NaN
    # and signed zeros included: the builtins cost several times more per call)
    no_pass = -math.inf
    floor = math.floor
    for i, f in enumerate(links):
        t_in = t0_rel_s + run
        tau_f = tau[f]
        run += tau_f
        base = -ages[i] if ages is not None else no_pass
        mine = last.get(f, no_pass)
        since[i] = t_in - (mine if mine > base else base)
        last[f] = t_in + tau_f
        k = floor(t_in / dt + 0.5)
        k = 0 if k < 0 else k
        k = top if top < k else k
        ks[i] = k
        slots[i] = layer_slot[k]
        # C_i: value after a drop-off from f_i's cell, read as the table does (fractional
        # layers: core._interp at the shift tau / dt + trip layers, split per link in _static)
        a = shift_a[f]
        if a < 0:  # a shift that is not finite: as numpy does it, however odd
            c_next[i] = float(
                _interp(
                    table.cont.reshape(-1),
                    table.cont.shape[1],
                    k,
                    np.array([tau_f / dt + float(table.trip_layers[f])]),
                    np.array([cell[f]]),
                    table.slope_c[k],
                )[0]
            )
            continue
        lo = k + a
        lo = last_row if last_row < lo else lo
        col = cell[f]
        v0 = cont[lo][col]
        w = shift_w[f]
        c_next[i] = v0 + w * (cont[lo + 1][col] - v0) if w >= 0.0 else v0 + -w * slope_c[k]
    p = _route_pickup(table, idx, links, slots, since, tau)
    r = _end_value(table, links[-1], ks[-1], tau[links[-1]])
    fare, cost = st.fare, st.cost
    for i in range(count - 1, -1, -1):
        f = links[i]
        r = -cost[f] + p[i] * (fare[f] + c_next[i]) + (1.0 - p[i]) * r
    return r


def _route_pickup(
    table: ValueTable,
    idx: npt.NDArray[np.int64],
    links: list[int],
    slots: list[int],
    since: list[float],
    tau: list[float],
) -> list[float]:
    """:func:`route_value`'s ``P`` of each link of the route: the table's, or where the
    route's or the table's last pass depletes it, ``1 - exp(-rate (tau + min(since, W)))``
    through one ``np.expm1`` (the array form's bits)."""
    count = len(links)
    p: list[float] = table.pickup_prob[slots, idx].tolist()
    w_s: list[float] = table.window_s[idx].tolist()
    depleted = [i for i in range(count) if since[i] < w_s[i]]
    if depleted:
        rate: list[float] = table.rate_h[
            [slots[i] for i in depleted], [links[i] for i in depleted]
        ].tolist()
        args: list[float] = []
        for r, i in zip(rate, depleted, strict=True):
            s_i = since[i]
            s_i = 0.0 if s_i < 0.0 else s_i
            w_i = w_s[i]
            args.append(-r * ((tau[links[i]] + (s_i if s_i < w_i else w_i)) / 3600.0))
        for i, v in zip(
            depleted, (-np.expm1(np.array(args, dtype=np.float64))).tolist(), strict=True
        ):
            p[i] = v
    return p


def _end_value(table: ValueTable, end: int, k_end: int, tau_end: float) -> float:
    """``V`` after the route's last link ``end``, entered at layer ``k_end``: core._interp at
    the shift ``tau / dt``, on Python floats where the shift is finite."""
    prep = table.prep
    x_end = tau_end / prep.step_s
    slope_v = float(table.slope_v[k_end])
    if math.isfinite(x_end):
        a_end = max(float(math.floor(x_end)), 1.0)
        w = x_end - a_end
        lo = min(int(float(k_end) + a_end), table.values.shape[0] - 2)
        v0 = float(table.values[lo, end])
        return v0 + w * (float(table.values[lo + 1, end]) - v0) if w >= 0.0 else v0 + -w * slope_v
    flat = table.values.reshape(-1)
    x = np.array([x_end])
    return float(_interp(flat, prep.n, k_end, x, np.array([end]), table.slope_v[k_end])[0])


@dataclass(frozen=True, eq=False)
class _Static:
    """What :func:`route_value` reads of a table that its views with the fleet share, as
    Python lists: per link its time, drop-off cell, fare and cost and the drop-off value's
    fractional-layer shift ``tau / dt + trip layers`` split as core._interp splits it (the
    whole layers ``a = max(floor(x), 1)``, -1 where not finite, and the rest ``x - a``); per
    layer its slot and the network-mean slope; the drop-off values by row."""

    inputs: tuple[object, ...]
    tau: list[float]
    cell: list[int]
    fare: list[float]
    cost: list[float]
    shift_a: list[int]
    shift_w: list[float]
    layer_slot: list[int]
    slope_c: list[float]
    cont: list[list[float]]
    last_row: int  # the last row core._interp reads from below (rows - 2)


#: per table (by the identity of what :class:`_Static` reads), a few recent tables
_STATIC: OrderedDict[int, _Static] = OrderedDict()
_STATIC_MAX = 8
_STATIC_LOCK = threading.Lock()


def _static(table: ValueTable) -> _Static:
    """The :class:`_Static` lists of ``table``, kept while its arrays are the same objects (a
    solved table's arrays are not written to after the solve)."""
    prep = table.prep
    inputs = (
        prep.tau_s,
        prep.step_s,
        table.cell,
        table.fare,
        table.cost,
        table.trip_layers,
        table.layer_slot,
        table.slope_c,
        table.cont,
    )
    key = id(table.cont)
    with _STATIC_LOCK:
        hit = _STATIC.get(key)
        if hit is not None and all(a is b for a, b in zip(hit.inputs, inputs, strict=True)):
            _STATIC.move_to_end(key)
            return hit
    x = prep.tau_s / prep.step_s + table.trip_layers  # as route_value's array form
    finite = np.isfinite(x)
    a = np.maximum(np.floor(np.where(finite, x, 0.0)), 1.0)
    got = _Static(
        inputs=inputs,
        tau=prep.tau_s.tolist(),
        cell=table.cell.tolist(),
        fare=table.fare.tolist(),
        cost=table.cost.tolist(),
        shift_a=np.where(finite, a, -1.0).astype(np.int64).tolist(),
        shift_w=np.where(finite, x - a, 0.0).tolist(),
        layer_slot=table.layer_slot.tolist(),
        slope_c=table.slope_c.tolist(),
        cont=table.cont.tolist(),
        last_row=table.cont.shape[0] - 2,
    )
    with _STATIC_LOCK:
        _STATIC[key] = got
        while len(_STATIC) > _STATIC_MAX:
            _STATIC.popitem(last=False)
    return got


def choose_route(
    table: ValueTable,
    start: int,
    t0_rel_s: float,
    new_route: Sequence[int],
    previous_route: Sequence[int] | None,
    margin: float,
    committed_links: int = 0,
    extend: Callable[[tuple[int, ...]], Sequence[int]] | None = None,
) -> RouteChoice:
    """Keep ``previous_route`` (local links still to enter after ``start``, as the driver was
    shown) or take ``new_route`` (the read-out), see the module docstring.

    ``committed_links``: how many leading links of ``previous_route`` the cab is committed to
    (those up to and through its next manoeuvre when :func:`is_committed`; 0: none). A
    previous route with a link the table may no longer enter is not kept. ``extend``: the
    read-out continued after a given prefix (``follow(..., prefix=...)``), so that the kept
    route is as long as a new one and both are valued over the same stretch (a short route
    would otherwise reach the policy's fresh-curb values sooner); None: as given."""
    new = tuple(int(f) for f in new_route)
    value_new = route_value(table, start, t0_rel_s, new)
    if not previous_route:
        return RouteChoice(new, NEW, value_new, None)
    prev = tuple(int(f) for f in previous_route)
    if not _enterable(table, start, t0_rel_s, prev):
        return RouteChoice(new, NEW, value_new, None)
    if extend is not None:
        prev = tuple(int(f) for f in extend(prev))
    value_prev = route_value(table, start, t0_rel_s, prev)
    head = min(max(committed_links, 0), len(prev))
    if head and new[:head] != prev[:head]:
        return RouteChoice(prev, COMMITTED, value_new, value_prev)
    if new == prev:
        return RouteChoice(new, SAME, value_new, value_prev)
    if switches(value_new, value_prev, margin):
        return RouteChoice(new, SWITCHED, value_new, value_prev)
    return RouteChoice(prev, KEPT, value_new, value_prev)


def switches(value_new: float, value_previous: float, margin: float) -> bool:
    """Is the new route better than the previous one by the margin (:func:`choose_route`)?"""
    return value_new > value_previous + margin * abs(value_previous)


def _enterable(table: ValueTable, start: int, t0_rel_s: float, route: tuple[int, ...]) -> bool:
    """Every link of ``route`` follows the one before along a legal turn and may be entered
    when the cab gets there (cruise flags, area, no-entry windows). In C where it is built
    (:func:`agent.planner.walk_c.enterable`, the same answer)."""
    got = walk_c.enterable(table, start, t0_rel_s, route)
    return got if got is not None else _enterable_py(table, start, t0_rel_s, route)


def _enterable_py(table: ValueTable, start: int, t0_rel_s: float, route: tuple[int, ...]) -> bool:
    """:func:`_enterable` in Python (the reference)."""
    prep = table.prep
    n = prep.n
    for f in route:
        if f < 0 or f >= n:
            return False
    facts = link_facts_of(prep)
    t = t0_rel_s
    e = start
    minute0 = table.start_minute_of_week
    allowed: list[bool] | npt.NDArray[np.bool_] = []
    at = math.nan  # the whole minute ``allowed`` is of (allowed_at reads the floor alone)
    for f in route:
        if f not in (facts.get(e) or link_facts(prep, e))[0]:
            return False
        minute = minute0 + t / 60.0
        raw = math.floor(minute)
        if raw != at:
            allowed = allowed_list(table, minute)
            at = raw
        if not allowed[f]:
            return False
        t += (facts.get(f) or link_facts(prep, f))[4]
        e = f
    return True
