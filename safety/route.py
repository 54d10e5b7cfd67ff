"""Checks of a proposed route against the road graph, and the "follow the road" continuation.

A route is a sequence of global edge ids in driving order. It must start on the link the cab is
matched to, or on a link reachable from it by one legal turn (the rest of the current link is
then driven first). The current link itself is exempt from the link checks (the cab is already
there: a cab on a private driveway may leave it); every link *entered* must be:

* known to the loaded graph (``ROUTE_UNKNOWN_LINK``), never motorway/private/pier
  (``tiles.tags.CRUISE_FORBIDDEN``), inside the business area;
* open when the cab gets there: entry times are estimated at free-flow speed and at
  ``slowdown_factor`` times slower, and the link must be outside every no-entry window over
  that whole interval (doubt closes);
* joined to the previous link (same node, ``ROUTE_DISCONNECTED``) by a legal turn
  (``graph.turn_to``: turn restrictions and oneways are absent turns, ``ROUTE_ILLEGAL_TURN``).

And the whole route: at most ``max_u_turns`` U-turns and ``max_visits_per_link`` visits of any
link (``ROUTE_LOOP``), at most ``max_length_m`` and ``max_links`` (``ROUTE_ABSURD_LENGTH``).

:func:`judge_route` separates what condemns the whole route (unknown, forbidden, outside the
area, disconnected, illegal turn, not drivable from the cab) from what only ends the part that
may be shown (a loop, a possibly closed link, the length bound, further ahead): the prefix
before the first such link is as safe as any route, and the planner replans every tick.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from safety.config import RouteConfig
from safety.reasons import Reason
from tiles import Graph
from tiles import tags as T
from tiles.conditional import MINUTES_PER_WEEK

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class _GraphIndex:
    turn_keys: I64  # sorted src_local * n_total + dst_global of every legal turn
    win_local: I64  # local index of each no-entry window's edge (-1 if not loaded)
    win_start: npt.NDArray[np.float64]
    win_end: npt.NDArray[np.float64]
    travel_time_s: npt.NDArray[np.float64]
    length_m: npt.NDArray[np.float64]


_INDEX: weakref.WeakKeyDictionary[Graph, _GraphIndex] = weakref.WeakKeyDictionary()
_INDEX_LOCK = threading.Lock()


def _index(g: Graph) -> _GraphIndex:
    with _INDEX_LOCK:
        idx = _INDEX.get(g)
        if idx is None:
            counts = np.diff(g.turn_offsets)
            src = np.repeat(np.arange(g.n, dtype=np.int64), counts)
            keys = np.sort(src * np.int64(g.n_edges_total) + g.turn_to.astype(np.int64))
            wl = g.local(g.win_edge).astype(np.int64)
            keep = wl >= 0
            idx = _GraphIndex(
                turn_keys=keys,
                win_local=wl[keep],
                win_start=g.win_start[keep].astype(np.float64),
                win_end=g.win_end[keep].astype(np.float64),
                travel_time_s=np.asarray(g.travel_time_s, dtype=np.float64),
                length_m=np.asarray(g.length_m, dtype=np.float64),
            )
            _INDEX[g] = idx
        return idx


def legal_turns(
    g: Graph, src_local: npt.ArrayLike, dst_global: npt.ArrayLike
) -> npt.NDArray[np.bool_]:
    """Whether each (local from-link, global to-link) pair is a legal turn of ``g``."""
    idx = _index(g)
    keys = np.asarray(src_local, dtype=np.int64) * np.int64(g.n_edges_total) + np.asarray(
        dst_global, dtype=np.int64
    )
    if idx.turn_keys.size == 0:
        return np.zeros(keys.shape, dtype=bool)
    pos = np.searchsorted(idx.turn_keys, keys)
    pos = np.minimum(pos, idx.turn_keys.size - 1)
    return np.asarray(idx.turn_keys[pos] == keys)


def route_array(route: object) -> I64 | None:
    """The route as int64 ids, or None when it is not a flat sequence of integers."""
    if route is None or isinstance(route, str | bytes):
        return None
    try:
        arr = np.asarray(route)
    except (ValueError, TypeError):
        return None
    if arr.ndim != 1:
        return None
    if arr.size == 0:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        return None
    return arr.astype(np.int64)


@dataclass(frozen=True)
class RouteJudgement:
    """What may be shown of a proposed route.

    ``reasons`` reject the whole route (a planner that proposes a forbidden link, an illegal
    turn or a jump is not trusted at all). ``trimmed`` are route-shape problems found further
    ahead (a U-turn or a link visited once too often, a link that may be closed when reached,
    the length bound): the first ``keep`` links, ``kept_length_m`` metres from the cab, are
    free of them and may still be shown, since the planner replans every tick anyway.
    """

    reasons: tuple[Reason, ...]
    trimmed: tuple[Reason, ...] = ()
    keep: int = 0
    kept_length_m: float = 0.0

    @property
    def all_reasons(self) -> tuple[Reason, ...]:
        return (*self.reasons, *self.trimmed)


def check_route(
    g: Graph,
    route: Sequence[int] | I64 | None,
    start_edge: int,
    start_fraction: float,
    minute_of_week: float,
    cfg: RouteConfig,
    area_mask: npt.NDArray[np.bool_] | None = None,
    *,
    monday: dt.date | None = None,
) -> tuple[Reason, ...]:
    """Every reason the whole route may not be given to the driver (empty: it may)."""
    return judge_route(
        g, route, start_edge, start_fraction, minute_of_week, cfg, area_mask, monday=monday
    ).all_reasons


def judge_route(
    g: Graph,
    route: Sequence[int] | I64 | None,
    start_edge: int,
    start_fraction: float,
    minute_of_week: float,
    cfg: RouteConfig,
    area_mask: npt.NDArray[np.bool_] | None = None,
    *,
    monday: dt.date | None = None,
) -> RouteJudgement:
    """Judge a route link by link (see :class:`RouteJudgement` and the module docstring).

    ``monday``: the local date of the Monday of ``minute_of_week``'s week; links whose
    no-entry windows depend on the date (public holidays, months, sun times) are then judged
    on the real dates (without it: the ordinary week, see ``Graph.closed_at``).
    """
    arr = route_array(route)
    if arr is None:
        return RouteJudgement((Reason.ROUTE_UNKNOWN_LINK,))
    if arr.size == 0:
        return RouteJudgement((Reason.ROUTE_MISSING,))
    if arr.size > cfg.max_links:
        return RouteJudgement((Reason.ROUTE_ABSURD_LENGTH,))  # bounded work: not inspected
    loc = g.local(arr).astype(np.int64)
    if (loc < 0).any():
        return RouteJudgement((Reason.ROUTE_UNKNOWN_LINK,))
    b = int(g.local([start_edge])[0])
    if b < 0:
        return RouteJudgement((Reason.ROUTE_NOT_FROM_POSITION,))
    frac = float(np.clip(np.nan_to_num(start_fraction, nan=0.0), 0.0, 1.0))
    reasons: list[Reason] = []
    prepended = 0
    if loc[0] == b:
        path = loc
    elif bool(legal_turns(g, [b], [arr[0]])[0]):
        path = np.concatenate([[b], loc])
        prepended = 1
    else:
        reasons.append(Reason.ROUTE_NOT_FROM_POSITION)
        path = loc  # the rest is still judged on its own
    first_entered = 1 if path[0] == b else 0
    joined, condemned = _condemning_reasons(g, path, path[first_entered:], area_mask)
    reasons += condemned

    # trimmable problems: the first path index at which each appears (path.size if never)
    never = path.size
    loop_at = _loop_at(path, joined, g, cfg)
    idx = _index(g)
    cum_len = np.cumsum(idx.length_m[path]) - (frac * idx.length_m[b] if path[0] == b else 0.0)
    too_long = np.flatnonzero(~(cum_len <= cfg.max_length_m))
    length_at = int(too_long[0]) if too_long.size else never
    closed_at = _closed_at(g, path, b, frac, minute_of_week, cfg, monday)
    trimmed = [
        r
        for r, at in (
            (Reason.ROUTE_LOOP, loop_at),
            (Reason.ROUTE_ABSURD_LENGTH, length_at),
            (Reason.ROUTE_CLOSED_WINDOW, closed_at),
        )
        if at < never
    ]
    cut = min(loop_at, length_at, closed_at)
    keep = max(cut - prepended, 0)
    kept = float(cum_len[cut - 1]) if cut > 0 else 0.0
    return RouteJudgement(tuple(reasons), tuple(trimmed), keep, kept)


def _condemning_reasons(
    g: Graph, path: I64, entered: I64, area_mask: npt.NDArray[np.bool_] | None
) -> tuple[npt.NDArray[np.bool_], list[Reason]]:
    """Whether each step of ``path`` joins its links at one node, and the reasons that reject
    the whole route: a forbidden link or one outside the area entered, a jump, an illegal
    turn."""
    reasons: list[Reason] = []
    if ((g.flags[entered] & T.CRUISE_FORBIDDEN) != 0).any():
        reasons.append(Reason.ROUTE_FORBIDDEN_LINK)
    if area_mask is not None and not area_mask[entered].all():
        reasons.append(Reason.ROUTE_OUTSIDE_AREA)
    a, c = path[:-1], path[1:]
    joined = g.v_node[a] == g.u_node[c]
    if not joined.all():
        reasons.append(Reason.ROUTE_DISCONNECTED)
    if a.size and not legal_turns(g, a[joined], g.edge_id[c[joined]]).all():
        reasons.append(Reason.ROUTE_ILLEGAL_TURN)
    return joined, reasons


def _loop_at(path: I64, joined: npt.NDArray[np.bool_], g: Graph, cfg: RouteConfig) -> int:
    """The first index of ``path`` past ``max_u_turns`` U-turns or visiting a link more than
    ``max_visits_per_link`` times (``path.size`` if none)."""
    n = path.size
    a, c = path[:-1], path[1:]
    u_turn = np.concatenate([[False], joined & (g.v_node[c] == g.u_node[a])])
    over_u = np.flatnonzero(np.cumsum(u_turn) > cfg.max_u_turns)
    order = np.argsort(path, kind="stable")
    srt = path[order]
    group_start = np.flatnonzero(np.concatenate([[True], srt[1:] != srt[:-1]]))
    sizes = np.diff(np.concatenate([group_start, [n]]))
    occurrence = np.empty(n, dtype=np.int64)
    occurrence[order] = np.arange(n) - np.repeat(group_start, sizes)
    over_v = np.flatnonzero(occurrence >= cfg.max_visits_per_link)
    return int(min(over_u[0] if over_u.size else n, over_v[0] if over_v.size else n))


def _closed_at(
    g: Graph,
    path: I64,
    b: int,
    frac: float,
    minute_of_week: float,
    cfg: RouteConfig,
    monday: dt.date | None,
) -> int:
    """The first index of ``path`` whose link may be inside a no-entry window when the cab
    enters it (``path.size`` if none); the cab's own link ``b`` (at ``frac``) is not entered."""
    idx = _index(g)
    first_entered = 1 if path[0] == b else 0
    entered = path[first_entered:]
    if not (idx.win_local.size and entered.size):
        return int(path.size)
    tt = idx.travel_time_s
    first_rest = (1.0 - frac) * tt[b] if path[0] == b else 0.0
    entry_s = np.concatenate([[0.0], np.cumsum(tt[entered])[:-1]]) + first_rest
    hit = _closed_when_entered(idx, entered, entry_s, minute_of_week, cfg.slowdown_factor)
    if monday is not None and g.dated is not None:
        _dated_entries(g, hit, entered, entry_s, minute_of_week, cfg.slowdown_factor, monday)
    return int(np.argmax(hit)) + first_entered if hit.any() else int(path.size)


def _closed_when_entered(
    idx: _GraphIndex,
    entered: I64,
    entry_s: npt.NDArray[np.float64],
    minute_of_week: float,
    slowdown: float,
) -> npt.NDArray[np.bool_]:
    """Per entered link: inside a no-entry window at some time of its entry interval."""
    sel = np.flatnonzero(np.isin(idx.win_local, entered))
    if sel.size == 0:
        return np.zeros(entered.shape, dtype=bool)
    with np.errstate(invalid="ignore"):  # an unknown (inf/NaN) arrival stays NaN: closed below
        lo = (minute_of_week + entry_s / 60.0) % MINUTES_PER_WEEK  # (K,)
    hi = lo + entry_s * (max(slowdown, 1.0) - 1.0) / 60.0
    same = idx.win_local[sel][:, None] == entered[None, :]  # (W, K)
    s = idx.win_start[sel][:, None]
    e = idx.win_end[sel][:, None]
    hit = np.zeros(same.shape, dtype=bool)
    for shift in (0.0, float(MINUTES_PER_WEEK)):  # windows seen again after the week wraps
        hit |= (s + shift <= hi[None, :]) & (e + shift > lo[None, :])
    hit |= ~np.isfinite(hi)[None, :]  # arrival unknown: a windowed link may be closed
    return np.asarray((same & hit).any(axis=0))


def _dated_entries(
    g: Graph,
    hit: npt.NDArray[np.bool_],
    entered: I64,
    entry_s: npt.NDArray[np.float64],
    minute_of_week: float,
    slowdown: float,
    monday: dt.date,
) -> None:
    """Re-judge, on the real dates, the entered links whose windows depend on the date."""
    assert g.dated is not None
    dated = g.local(g.dated.edge).astype(np.int64)
    for k in np.flatnonzero(np.isin(entered, dated[dated >= 0])).tolist():
        lo = minute_of_week + float(entry_s[k]) / 60.0
        hi = lo + float(entry_s[k]) * (max(slowdown, 1.0) - 1.0) / 60.0
        if not (math.isfinite(lo) and math.isfinite(hi)):
            hit[k] = True  # arrival unknown: may be closed
            continue
        minutes = np.arange(math.floor(lo), math.floor(hi) + 1, dtype=np.int64)
        hit[k] = bool(g.closed_at(minutes, monday)[:, int(entered[k])].any())


def closed_now(g: Graph, local: int, minute_of_week: float, monday: dt.date | None = None) -> bool:
    """Whether link ``local`` is inside a no-entry window at this minute (``monday``: on the
    real date, see :func:`judge_route`)."""
    if monday is not None and g.dated is not None and local in set(g.local(g.dated.edge)):
        return bool(g.closed_at(math.floor(minute_of_week), monday)[local])
    idx = _index(g)
    m = minute_of_week % MINUTES_PER_WEEK
    w = idx.win_local == local
    return bool(((idx.win_start[w] <= m) & (m < idx.win_end[w])).any())


def hard_to_judge(
    g: Graph, start_edge: int, start_fraction: float, route: I64 | None, cfg: RouteConfig
) -> bool:
    """The cab is on (or about to enter) a road where no turn-by-turn guidance is given."""
    b = int(g.local([start_edge])[0])
    if b < 0:
        return False
    if int(g.flags[b]) & T.HARD_TO_JUDGE:
        return True
    remaining = (1.0 - float(np.clip(np.nan_to_num(start_fraction), 0.0, 1.0))) * float(
        g.length_m[b]
    )
    if remaining > cfg.hard_to_judge_ahead_m:
        return False
    nxt: int | None = None
    if route is not None and route.size:
        loc = g.local(route)
        k = 1 if loc[0] == b else 0
        if k < loc.size and loc[k] >= 0:
            nxt = int(loc[k])
    if nxt is None:
        return False
    return bool(int(g.flags[nxt]) & T.HARD_TO_JUDGE)


def follow_the_road(
    g: Graph,
    start_edge: int,
    minute_of_week: float,
    cfg: RouteConfig,
    *,
    monday: dt.date | None = None,
) -> tuple[int, ...]:
    """The links that continue the cab's current road, from ``start_edge`` on (global ids).

    At each junction: the legal continuation on the same OSM way if there is one, else the
    straightest legal turn within ``max_straight_turn_deg``; never a U-turn, never into a link
    closed now, and off a cruise-forbidden road only when the current one is forbidden too.
    Stops after ``continuation_length_m``, at a dead end, or where the road does not continue.
    """
    b = int(g.local([start_edge])[0])
    if b < 0:
        return ()
    out = [b]
    seen = {b}
    length = 0.0
    cur = b
    while length < cfg.continuation_length_m:
        succ_g = g.turn_to[g.turn_offsets[cur] : g.turn_offsets[cur + 1]]
        succ = g.local(succ_g).astype(np.int64)
        succ = succ[succ >= 0]
        if succ.size == 0:
            break
        keep = ~((g.u_node[succ] == g.v_node[cur]) & (g.v_node[succ] == g.u_node[cur]))
        if not int(g.flags[cur]) & T.CRUISE_FORBIDDEN:
            keep &= (g.flags[succ] & T.CRUISE_FORBIDDEN) == 0
        keep &= np.array(
            [not closed_now(g, int(s), minute_of_week, monday) for s in succ], dtype=bool
        )
        succ = succ[keep]
        if succ.size == 0:
            break
        turn = np.abs(
            (g.bearing_start[succ].astype(np.float64) - float(g.bearing_end[cur]) + 180.0) % 360.0
            - 180.0
        )
        same_way = g.way_id[succ] == g.way_id[cur]
        if same_way.any():
            pick = int(succ[same_way][np.argmin(turn[same_way])])
        elif turn.min() <= cfg.max_straight_turn_deg:
            pick = int(succ[np.argmin(turn)])
        else:
            break
        if pick in seen:
            break
        seen.add(pick)
        out.append(pick)
        length += float(g.length_m[pick])
        cur = pick
    return tuple(int(g.edge_id[i]) for i in out)
