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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from agent.planner.core import ValueTable, _interp

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
    docstring). An empty route is the policy's value ``V(start, t0)``."""
    prep = table.prep
    dt = prep.step_s
    n = prep.n
    flat = table.values.reshape(-1)
    k0 = min(max(math.floor(t0_rel_s / dt + 0.5), 0), table.n_layers - 1)
    if not route:
        return float(table.values[k0, start])
    links = np.asarray(route, dtype=np.int64)
    tau = prep.tau_s[links]
    t_in = t0_rel_s + np.concatenate([[0.0], np.cumsum(tau)[:-1]])
    # last vacant pass before each entry: the table's passes, then the route's own (start too)
    base = (
        -table.pass_age_s[links]
        if table.pass_age_s is not None
        else np.full(links.shape[0], -np.inf)
    )
    last = {int(start): t0_rel_s}
    since = np.empty(links.shape[0], dtype=np.float64)
    for i, f in enumerate(links.tolist()):
        since[i] = t_in[i] - max(float(base[i]), last.get(f, -math.inf))
        last[f] = float(t_in[i] + tau[i])
    layers = np.minimum(np.maximum(np.floor(t_in / dt + 0.5), 0), table.n_layers - 1)
    k = layers.astype(np.int64)
    slot = table.layer_slot[k]
    w = table.window_s[links]
    window = np.minimum(w, np.maximum(since, 0.0))
    p = -np.expm1(-table.rate_h[slot, links] * ((tau + window) / 3600.0))
    p = np.where(since < w, p, table.pickup_prob[slot, links])
    # C_i: value after a drop-off from f_i's cell, read as the table does (fractional layers)
    c_next = _interp(
        table.cont.reshape(-1),
        table.cont.shape[1],
        k,
        tau / dt + table.trip_layers[links],
        table.cell[links],
        table.slope_c[k],
    )
    end = int(links[-1])
    k_end = int(k[-1])
    r = float(
        _interp(flat, n, k_end, np.array([tau[-1] / dt]), np.array([end]), table.slope_v[k_end])[0]
    )
    for i in range(links.shape[0] - 1, -1, -1):
        f = int(links[i])
        r = (
            -float(table.cost[f])
            + float(p[i]) * (float(table.fare[f]) + float(c_next[i]))
            + (1.0 - float(p[i])) * r
        )
    return r


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
    if value_new > value_prev + margin * abs(value_prev):
        return RouteChoice(new, SWITCHED, value_new, value_prev)
    return RouteChoice(prev, KEPT, value_new, value_prev)


def _enterable(table: ValueTable, start: int, t0_rel_s: float, route: tuple[int, ...]) -> bool:
    """Every link of ``route`` follows the one before along a legal turn and may be entered
    when the cab gets there (cruise flags, area, no-entry windows)."""
    prep = table.prep
    if any(f < 0 or f >= prep.n for f in route):
        return False
    t = t0_rel_s
    e = start
    for f in route:
        lo, hi = int(prep.arc_offsets[e]), int(prep.arc_offsets[e + 1])
        if f not in prep.arc_dst[lo:hi].tolist():  # a list: faster than numpy's `in` here
            return False
        if not bool(table.allowed_at(table.start_minute_of_week + t / 60.0)[f]):
            return False
        t += float(prep.tau_s[f])
        e = f
    return True
