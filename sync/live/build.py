"""The server's snapshot builder: :func:`build_snapshot` (pure) counts the latest heartbeats per
link and the last hour's pickups per cell."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from sync.live.heartbeat import Heartbeat, MeterEvent, network_tag
from sync.live.protocol import MAX_COUNT, PICKUP, WINDOWS_S
from sync.live.snapshot import I64, GridSpec, Snapshot


def _cells(grid: GridSpec, lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64]) -> I64:
    min_lon, min_lat, dlon, dlat, ncols, nrows = grid
    cx = np.floor((lon - min_lon) / dlon)
    cy = np.floor((lat - min_lat) / dlat)
    ok = (cx >= 0) & (cx < ncols) & (cy >= 0) & (cy < nrows)
    return np.where(ok, cy * ncols + cx, -1).astype(np.int64)


def build_snapshot(
    heartbeats: Iterable[Heartbeat],
    now: float,
    *,
    area: str,
    pickups: Iterable[MeterEvent] = (),
    network: str = "",
    grid: GridSpec | None = None,
    version: int = 0,
    expires_in_s: float = 180.0,
    current_s: float = 45.0,
    planned_s: float = 120.0,
) -> Snapshot:
    """The live snapshot of ``area`` at ``now`` (pure).

    ``heartbeats``: the latest heartbeat of each cab. A vacant cab whose heartbeat is at most
    ``current_s`` old counts on its link now; one at most ``planned_s`` old counts once on
    every other link of its route. Link counts come only from heartbeats on ``network`` (when
    known). ``pickups``: the meter pickups (deduplicated) of the last hour, counted per cell
    of ``grid`` in the last 15, 30 and 60 minutes (outside the grid: not counted).
    """
    tag = network_tag(network) if network else None
    n_vacant, n_occupied, links_now, route_edges, route_cab = _gather(
        heartbeats, now, area, tag, current_s, planned_s
    )
    link_ids, vacant_now, planned = _link_counts(links_now, route_edges, route_cab)
    cell_ids = np.zeros(0, np.int64)
    counts = np.zeros((0, 3), np.int64)
    if grid is not None:
        cell_ids, counts = _cell_counts(pickups, now, grid, current_s)
    return Snapshot(
        area=area,
        version=version,
        built_s=float(now),
        expires_s=float(now) + expires_in_s,
        network=network,
        grid=grid,
        vacant_cabs=n_vacant,
        occupied_cabs=n_occupied,
        link_ids=link_ids,
        vacant_now=np.minimum(vacant_now, MAX_COUNT),
        planned=np.minimum(planned, MAX_COUNT),
        cell_ids=cell_ids,
        pickups=np.minimum(counts, MAX_COUNT),
    )


def _gather(
    heartbeats: Iterable[Heartbeat],
    now: float,
    area: str,
    tag: bytes | None,
    current_s: float,
    planned_s: float,
) -> tuple[int, int, list[int], list[int], list[int]]:
    """The cabs of ``area`` vacant and occupied now, the links of the vacant ones now, and
    every vacant cab's route flat, each edge with its cab (its position in ``heartbeats``),
    the cab's own link marked by ``-1 - cab``."""
    links_now: list[int] = []
    route_edges: list[int] = []  # every vacant cab's route, flat
    route_cab: list[int] = []  # the cab (its position in this call) of each route edge
    n_vacant = n_occupied = 0
    for k, hb in enumerate(heartbeats):
        age = now - hb.t_s
        if hb.area != area or age > planned_s:
            continue
        if age <= current_s:
            if hb.vacant:
                n_vacant += 1
            else:
                n_occupied += 1
        if not hb.vacant or (tag is not None and hb.network != tag):
            continue
        if age <= current_s and hb.link >= 0:
            links_now.append(hb.link)
        if hb.route:
            route_edges.extend(hb.route)
            route_cab.extend([k] * len(hb.route))
            route_edges.append(hb.link)  # marks the cab's own link, removed below
            route_cab.append(-1 - k)
    return n_vacant, n_occupied, links_now, route_edges, route_cab


def _link_counts(
    links_now: list[int], route_edges: list[int], route_cab: list[int]
) -> tuple[I64, I64, I64]:
    """The sorted links with a count, the vacant cabs on each now and the passes planned
    over each (every (cab, edge) once, without the cab's own link)."""
    now_ids, now_n = np.unique(np.asarray(links_now, dtype=np.int64), return_counts=True)
    # each (edge, cab) once, without the cab's own link: one sort, by edge then cab (the edge
    # in the high 32 bits), so each edge's distinct cabs are one run
    e = np.asarray(route_edges, dtype=np.int64)
    c = np.asarray(route_cab, dtype=np.int64)
    own = c < 0
    cab = np.where(own, -1 - c, c).astype(np.uint64)
    edge = (e & 0xFFFFFFFF).astype(np.uint64)
    key = _sorted_unique(edge << np.uint64(32) | cab)
    own_key = edge[own] << np.uint64(32) | cab[own]
    at = _found(key, own_key)
    if at.size:
        keep = np.ones(key.size, dtype=np.bool_)
        keep[at] = False
        key = key[keep]
    edges = (key >> np.uint64(32)).astype(np.int64)
    first = np.flatnonzero(np.diff(edges, prepend=-1))  # the start of each edge's run
    pl_ids = edges[first]
    pl_n = np.diff(first, append=edges.size)
    link_ids = np.union1d(now_ids, pl_ids)
    vacant_now = np.zeros(len(link_ids), np.int64)
    planned = np.zeros(len(link_ids), np.int64)
    vacant_now[np.searchsorted(link_ids, now_ids)] = now_n
    planned[np.searchsorted(link_ids, pl_ids)] = pl_n
    return link_ids, vacant_now, planned


def _sorted_unique(a: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """``np.unique(a)`` (sorted, each once) by one in-place sort (np.unique's own path takes
    three times as long on the tens of thousands of route edges of a large fleet)."""
    a = np.sort(a)
    if a.size < 2:
        return a
    keep = np.empty(a.size, dtype=np.bool_)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def _found(key: npt.NDArray[np.uint64], wanted: npt.NDArray[np.uint64]) -> I64:
    """The positions in the sorted ``key`` of those of ``wanted`` it holds."""
    at = np.searchsorted(key, wanted)
    inside = at < key.size
    at, wanted = at[inside], wanted[inside]
    return np.asarray(at[key[at] == wanted], dtype=np.int64)


def _cell_counts(
    pickups: Iterable[MeterEvent], now: float, grid: GridSpec, current_s: float
) -> tuple[I64, I64]:
    """The sorted cells of ``grid`` with a pickup in the last hour and their pickups in the
    last 15, 30 and 60 minutes (shape ``(cells, 3)``)."""
    cell_ids = np.zeros(0, np.int64)
    counts = np.zeros((0, 3), np.int64)
    ev = [(e.t_s, e.lon, e.lat) for e in pickups if e.kind == PICKUP]
    if ev:
        a = np.asarray(ev, dtype=np.float64)
        ages = now - a[:, 0]
        keep = (ages >= -current_s) & (ages <= WINDOWS_S[-1])
        cells = _cells(grid, a[keep, 1], a[keep, 2])
        ages = ages[keep]
        inside = cells >= 0
        cells, ages = cells[inside], ages[inside]
        cell_ids = np.unique(cells)
        pos = np.searchsorted(cell_ids, cells)
        counts = np.zeros((len(cell_ids), 3), np.int64)
        for j, w in enumerate(WINDOWS_S):
            np.add.at(counts[:, j], pos[ages <= w], 1)
    return cell_ids, counts
