"""An in-memory directed road graph over a set of tiles, as fixed-width numpy arrays.

Edges carry *global* ids (stable across tiles: a tile's edges are a contiguous id range, and
turn successors name global ids, so a path crosses tile borders without translation). Local
indices ``0..n-1`` index the arrays of this :class:`Graph`; :meth:`Graph.local` maps global ids
to local ones (-1 where the edge is not loaded).

The planner and the router work on the *line graph*: its states are directed edges and its arcs
are the legal turns (turn restrictions are turns that are simply absent).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from tiles import tags as T
from tiles.conditional import (
    CLOSING_BY_KIND,
    MINUTES_PER_DAY,
    MINUTES_PER_WEEK,
    Area,
    parse_conditional,
)

if TYPE_CHECKING:  # scipy is imported where a sparse matrix is built (not on the agent's tick)
    import scipy.sparse as sp

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]


@lru_cache(maxsize=4096)
def _rules_closed_on(rules: tuple[tuple[str, str], ...], area: Area, day: dt.date) -> Bool:
    mask = np.zeros(MINUTES_PER_DAY, dtype=bool)
    for value, kind in rules:
        mask |= parse_conditional(value, CLOSING_BY_KIND[kind], area).closed_on(day)
    mask.setflags(write=False)
    return mask


@dataclass(frozen=True, eq=False)
class DatedRules:
    """The links whose no-entry windows depend on the date (public holidays, months, sun
    times), with every conditional rule of each: evaluated per local day, cached."""

    edge: I32  # global edge ids, ascending
    rules: tuple[tuple[tuple[str, str], ...], ...]  # per edge: (value, closing kind)
    area: Area

    def closed_on(self, i: int, day: dt.date) -> Bool:
        """Minutes of the local date ``day`` when edge ``self.edge[i]`` is closed."""
        return _rules_closed_on(self.rules[i], self.area, day)


@dataclass(frozen=True, eq=False)
class Graph:
    """Directed edges (road links) with their geometry, legal turns and no-entry windows."""

    edge_id: I32  # global id per local edge, ascending
    u_lon: F64
    u_lat: F64
    v_lon: F64
    v_lat: F64
    u_node: I32  # global node ids
    v_node: I32
    way_id: I64
    length_m: F32
    speed_kph: F32
    highway: npt.NDArray[np.uint8]
    flags: npt.NDArray[np.uint16]
    bearing_start: F32
    bearing_end: F32
    geom_offsets: I64  # local, n+1
    geom_lonlat: F64  # (m, 2)
    turn_offsets: I64  # local, n+1
    turn_to: I32  # global ids of successors
    win_edge: I32  # global ids
    win_start: npt.NDArray[np.int16]
    win_end: npt.NDArray[np.int16]
    n_edges_total: int
    dated: DatedRules | None = None
    #: ``(parent, idx)`` when made by :meth:`subset`: local edge ``i`` is ``parent``'s edge
    #: ``idx[i]`` (lets map matching reuse the parent's segment index)
    subset_of: tuple[Graph, I64] | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return int(self.edge_id.shape[0])

    @cached_property
    def _g2l(self) -> I32:
        table = np.full(self.n_edges_total, -1, dtype=np.int32)
        table[self.edge_id] = np.arange(self.n, dtype=np.int32)
        return table

    @property
    def global_to_local(self) -> I32:
        """Per global edge id (``0 .. n_edges_total - 1``) its local index, -1 where the edge
        is not in this graph (:meth:`local`'s table; not to be written)."""
        return self._g2l

    def local_index(self, global_id: int) -> int:
        """Local index of one global edge id (-1 if not in this graph)."""
        if not 0 <= global_id < self.n_edges_total:
            return -1
        return int(self._g2l[global_id])

    def local(self, global_ids: npt.ArrayLike) -> I32:
        """Local indices of global edge ids (-1 for edges not in this graph)."""
        ids = np.asarray(global_ids, dtype=np.int64)
        out = np.full(ids.shape, -1, dtype=np.int32)
        ok = (ids >= 0) & (ids < self.n_edges_total)
        out[ok] = self._g2l[ids[ok]]
        return out

    @cached_property
    def travel_time_s(self) -> F64:
        """Free-flow traversal time of each edge, seconds."""
        return np.asarray(self.length_m, dtype=np.float64) / (
            np.asarray(self.speed_kph, dtype=np.float64) / 3.6
        )

    @cached_property
    def turn_pairs(self) -> tuple[I32, I32]:
        """Legal turns inside this graph as local (from, to) index arrays."""
        counts = np.diff(self.turn_offsets)
        src = np.repeat(np.arange(self.n, dtype=np.int32), counts)
        dst = self.local(self.turn_to)
        keep = dst >= 0
        return src[keep], dst[keep]

    def line_graph(self, cost: F64, allowed: Bool | None = None) -> sp.csr_matrix:
        """Line graph as CSR: arc e->f weighs ``cost[f]`` (entering and traversing f).

        ``allowed`` masks edges that may be entered; arcs into other edges are dropped.
        """
        src, dst = self.turn_pairs
        if allowed is not None:
            keep = allowed[dst]
            src, dst = src[keep], dst[keep]
        w = cost[dst]
        # scipy treats explicit zeros as absent: keep them positive
        w = np.maximum(w, 1e-9)
        import scipy.sparse as sp

        return sp.csr_matrix((w, (src, dst)), shape=(self.n, self.n))

    def node_graph(self, cost: F64) -> sp.csr_matrix:
        """Node-based adjacency (ignores turn restrictions): for quick connectivity views."""
        nodes, inv = np.unique(np.concatenate([self.u_node, self.v_node]), return_inverse=True)
        u = inv[: self.n]
        v = inv[self.n :]
        import scipy.sparse as sp

        return sp.csr_matrix((np.maximum(cost, 1e-9), (u, v)), shape=(len(nodes), len(nodes)))

    def geometry(self, local_index: int) -> F64:
        """Coordinates ``[[lon, lat], ...]`` of one edge, in driving direction."""
        return self.geom_lonlat[self.geom_offsets[local_index] : self.geom_offsets[local_index + 1]]

    def closed_at(self, minute_of_week: int | npt.ArrayLike, monday: dt.date | None = None) -> Bool:
        """Edges inside a no-entry window at the given minute(s) of week.

        With a scalar, returns a mask over edges; with an array of K minutes, a (K, n) mask.
        Without ``monday``: an ordinary week (no public holiday; a rule that depends on the
        date closes in every minute of the week it closes in any week of the year). With
        ``monday``, the local date of the Monday that minute 0 falls on, the minutes are counted
        from that Monday 00:00 (10,080 and more: the next week, negative: the one before) and
        the links whose rules depend on the date are evaluated on the real dates.
        """
        mins = np.atleast_1d(np.asarray(minute_of_week, dtype=np.int64)) % MINUTES_PER_WEEK
        out = np.zeros((mins.shape[0], self.n), dtype=bool)
        if self.win_edge.size:
            loc = self.local(self.win_edge)
            keep = loc >= 0
            loc = loc[keep]
            s = self.win_start[keep].astype(np.int64)
            e = self.win_end[keep].astype(np.int64)
            if mins.shape[0] > 1 and bool(np.all(mins[1:] >= mins[:-1])):
                # sorted minutes (a plan's): each window's rows are one run, found by search
                lo = np.searchsorted(mins, s, "left")
                count = np.maximum(np.searchsorted(mins, e, "left") - lo, 0)
                out[_ranges(lo, count), np.repeat(loc, count)] = True
            else:
                inside = (mins[:, None] >= s[None, :]) & (mins[:, None] < e[None, :])
                rows, cols = np.nonzero(inside)
                out[rows, loc[cols]] = True
        if monday is not None and self.dated is not None:
            self._closed_on_dates(out, minute_of_week, monday)
        if np.ndim(minute_of_week) == 0:
            return np.asarray(out[0])
        return out

    def _closed_on_dates(
        self, out: Bool, minute_of_week: int | npt.ArrayLike, monday: dt.date
    ) -> None:
        assert self.dated is not None
        loc = self.local(self.dated.edge)
        present = np.flatnonzero(loc >= 0)
        if not present.size:
            return
        mins = np.atleast_1d(np.asarray(minute_of_week, dtype=np.int64))
        day = mins // MINUTES_PER_DAY
        in_day = mins % MINUTES_PER_DAY
        for d in np.unique(day).tolist():
            rows = np.flatnonzero(day == d)
            date = monday + dt.timedelta(days=int(d))
            for i in present.tolist():
                out[rows, loc[i]] = self.dated.closed_on(i, date)[in_day[rows]]

    def cruise_allowed(
        self, minute_of_week: int | None = None, monday: dt.date | None = None
    ) -> Bool:
        """Edges a cruising taxi may be sent onto (never motorway, private, pier, closed).

        ``monday``: see :meth:`closed_at` (the real date: public holidays and the like).
        """
        ok = (self.flags & T.CRUISE_FORBIDDEN) == 0
        if minute_of_week is not None:
            ok &= ~self.closed_at(minute_of_week, monday)
        return np.asarray(ok)

    def subset(self, mask: Bool) -> Graph:
        """The graph restricted to the edges in ``mask`` (turns to dropped edges vanish)."""
        keep = np.asarray(mask, dtype=bool).reshape(-1)
        idx = np.flatnonzero(keep)
        # shape points and turns of the kept edges: masks repeated per point / per turn and
        # compressed (a radius graph every plan: 3x faster than gathering index ranges)
        all_counts = np.diff(self.geom_offsets)
        counts = all_counts[idx]
        geom_offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(counts, out=geom_offsets[1:])
        geom = np.compress(np.repeat(keep, all_counts), self.geom_lonlat, axis=0)
        all_tcounts = np.diff(self.turn_offsets)
        tcounts = all_tcounts[idx]
        turn_offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(tcounts, out=turn_offsets[1:])
        turn_to = np.compress(np.repeat(keep, all_tcounts), self.turn_to)
        # the windows of kept edges (np.isin on the kept ids, by the local index instead)
        wloc = self.local(self.win_edge)
        wkeep = keep[np.where(wloc >= 0, wloc, 0)] & (wloc >= 0)
        return Graph(
            edge_id=self.edge_id[idx],
            u_lon=self.u_lon[idx],
            u_lat=self.u_lat[idx],
            v_lon=self.v_lon[idx],
            v_lat=self.v_lat[idx],
            u_node=self.u_node[idx],
            v_node=self.v_node[idx],
            way_id=self.way_id[idx],
            length_m=self.length_m[idx],
            speed_kph=self.speed_kph[idx],
            highway=self.highway[idx],
            flags=self.flags[idx],
            bearing_start=self.bearing_start[idx],
            bearing_end=self.bearing_end[idx],
            geom_offsets=geom_offsets,
            geom_lonlat=geom,
            turn_offsets=turn_offsets,
            turn_to=turn_to,
            win_edge=self.win_edge[wkeep],
            win_start=self.win_start[wkeep],
            win_end=self.win_end[wkeep],
            n_edges_total=self.n_edges_total,
            dated=self.dated,
            subset_of=(self, idx.astype(np.int64)),
        )

    @staticmethod
    def concat(parts: list[Graph]) -> Graph:
        """Join graphs of disjoint tiles (ordered by global id)."""
        parts = sorted((p for p in parts if p.n), key=lambda p: int(p.edge_id[0]))
        if not parts:
            raise ValueError("no edges to join")
        if len(parts) == 1:
            return parts[0]

        def offsets(name: str) -> I64:
            out = [np.zeros(1, dtype=np.int64)]
            base = 0
            for p in parts:
                off = getattr(p, name)
                out.append(off[1:] + base)
                base += int(off[-1])
            return np.concatenate(out)

        return Graph(
            edge_id=np.concatenate([p.edge_id for p in parts]),
            u_lon=np.concatenate([p.u_lon for p in parts]),
            u_lat=np.concatenate([p.u_lat for p in parts]),
            v_lon=np.concatenate([p.v_lon for p in parts]),
            v_lat=np.concatenate([p.v_lat for p in parts]),
            u_node=np.concatenate([p.u_node for p in parts]),
            v_node=np.concatenate([p.v_node for p in parts]),
            way_id=np.concatenate([p.way_id for p in parts]),
            length_m=np.concatenate([p.length_m for p in parts]),
            speed_kph=np.concatenate([p.speed_kph for p in parts]),
            highway=np.concatenate([p.highway for p in parts]),
            flags=np.concatenate([p.flags for p in parts]),
            bearing_start=np.concatenate([p.bearing_start for p in parts]),
            bearing_end=np.concatenate([p.bearing_end for p in parts]),
            geom_offsets=offsets("geom_offsets"),
            geom_lonlat=np.concatenate([p.geom_lonlat for p in parts]).reshape(-1, 2),
            turn_offsets=offsets("turn_offsets"),
            turn_to=np.concatenate([p.turn_to for p in parts]),
            win_edge=np.concatenate([p.win_edge for p in parts]),
            win_start=np.concatenate([p.win_start for p in parts]),
            win_end=np.concatenate([p.win_end for p in parts]),
            n_edges_total=parts[0].n_edges_total,
            dated=next((p.dated for p in parts if p.dated is not None), None),
        )


def _ranges(starts: I64, counts: npt.NDArray[np.int64]) -> I64:
    """Concatenated ``arange(s, s+c)`` for each (s, c), vectorised."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(counts)
    offs = np.repeat(np.asarray(starts, dtype=np.int64) - (ends - counts), counts)
    return np.asarray(np.arange(total, dtype=np.int64) + offs, dtype=np.int64)
