"""From ways to directed edges: splitting ways at junctions (:func:`split_ways`), one edge per
piece and allowed direction with its flags, piers and no-entry windows
(:func:`directed_edges`), and the edges' geometry and bearings (:func:`edge_geometry`)."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely

from tiles import tags as T
from tiles._osm.collect import Collector, RawWay
from tiles._osm.conditionals import way_conditionals
from tiles.conditional import Area, Windows
from tiles.geo import bearing_deg, haversine_m

#: one directed edge before ordering: (u index, v index, way id, piece, length m, speed kph,
#: highway code, flags, reverse, geometry index)
Row = tuple[int, int, int, int, float, float, int, int, int, int]


def split_ways(
    c: Collector, ways: list[RawWay]
) -> tuple[dict[int, tuple[float, float]], list[tuple[RawWay, int, int]]]:
    """Split each way at junctions (a node two ways share, or a way's end) and at the via nodes
    of turn restrictions; a closed loop between two cuts is halved. Returns every node's
    coordinates and the pieces ``(way, start index, end index)``, inclusive."""
    usage: Counter[int] = Counter()
    for w in ways:
        usage.update(set(w.node_ids))
        usage[w.node_ids[0]] += 2
        usage[w.node_ids[-1]] += 2
    breaks = {n for n, k in usage.items() if k >= 2}
    for r in c.restrictions:
        breaks.update(r.via_nodes)
    coord: dict[int, tuple[float, float]] = {}
    pieces: list[tuple[RawWay, int, int]] = []
    for w in ways:
        for i, n in enumerate(w.node_ids):
            coord[n] = (w.lons[i], w.lats[i])
        cut = [i for i, n in enumerate(w.node_ids) if n in breaks or i in (0, len(w.node_ids) - 1)]
        for a, b in itertools.pairwise(cut):
            if w.node_ids[a] == w.node_ids[b]:
                if b - a < 2:
                    continue
                mid = (a + b) // 2
                pieces.append((w, a, mid))
                pieces.append((w, mid, b))
            else:
                pieces.append((w, a, b))
    return coord, pieces


def area_of(ways: list[RawWay], country: str | None) -> Area:
    """The extract's centre (for sun times and, without ``country``, the holiday calendar)."""
    all_lon = np.fromiter((x for w in ways for x in (min(w.lons), max(w.lons))), dtype=np.float64)
    all_lat = np.fromiter((x for w in ways for x in (min(w.lats), max(w.lats))), dtype=np.float64)
    centre = (
        round(float(all_lat.min() + all_lat.max()) / 2, 4),
        round(float(all_lon.min() + all_lon.max()) / 2, 4),
    )
    return Area(coords=centre, country=country)


def _piece_flags(
    c: Collector,
    w: RawWay,
    a: int,
    b: int,
    direction: int,
    pier_union: shapely.Geometry | None,
) -> int:
    """The road-feature flags of one piece (motorway, private, ramp, taxi only, roundabout,
    one-way, pier: tagged, or lying on a pier polygon)."""
    t = w.tags
    flags = 0
    if T.is_motorway(t):
        flags |= T.FLAG_MOTORWAY
    if T.is_private(t):
        flags |= T.FLAG_PRIVATE
    if T.is_ramp(t):
        flags |= T.FLAG_RAMP
    if T.is_taxi_only(t):
        flags |= T.FLAG_TAXI_ONLY
    if t.get("junction") in {"roundabout", "circular"}:
        flags |= T.FLAG_ROUNDABOUT
    if direction != 0:
        flags |= T.FLAG_ONEWAY
    lons, lats = w.lons[a : b + 1], w.lats[a : b + 1]
    if t.get("man_made") == "pier" or _on_pier(
        w.node_ids[a : b + 1], lons, lats, c.pier_nodes, pier_union
    ):
        flags |= T.FLAG_PIER
    return flags


@dataclass
class _Directed:
    """The directed edges of all pieces, with what each carries besides its row."""

    rows: list[Row] = field(default_factory=list)
    geoms: list[tuple[list[float], list[float]]] = field(default_factory=list)
    windows: dict[tuple[int, int], list[tuple[int, int]]] = field(default_factory=dict)
    dated: dict[tuple[int, int], list[tuple[str, str]]] = field(default_factory=dict)
    ways_meta: dict[int, dict[str, str]] = field(default_factory=dict)


def directed_edges(
    c: Collector,
    pieces: list[tuple[RawWay, int, int]],
    node_index: dict[int, int],
    area: Area,
    cond_rows: list[dict[str, Any]],
) -> _Directed:
    """One directed edge per piece and allowed direction (one-way: one, else two), with its
    flags, the closed windows of its conditional restrictions (``tiles.conditional``: what
    cannot be read closes) and the date-dependent rules kept for the agent."""
    pier_union = shapely.union_all(c.pier_polygons) if c.pier_polygons else None
    if pier_union is not None:
        shapely.prepare(pier_union)
    out = _Directed()
    way_rules: dict[int, dict[str, list[tuple[str, Windows]]]] = {}
    for piece_no, (w, a, b) in enumerate(pieces):
        t = w.tags
        if w.way_id not in out.ways_meta:
            out.ways_meta[w.way_id] = {k: t[k] for k in T.KEPT_TAGS if k in t}
        lons = w.lons[a : b + 1]
        lats = w.lats[a : b + 1]
        direction = T.is_oneway(t)
        flags = _piece_flags(c, w, a, b, direction, pier_union)
        seg = np.asarray(haversine_m(lons[:-1], lats[:-1], lons[1:], lats[1:]))
        length = float(seg.sum())
        if length <= 0.0:
            continue
        speed = T.speed_kph(t)
        hw = T.HIGHWAY_CODE[t["highway"]]
        if w.way_id not in way_rules:
            way_rules[w.way_id] = way_conditionals(w, direction, area, cond_rows)
        win = way_rules[w.way_id]
        for rev in (False, True):
            if (direction == 1 and rev) or (direction == -1 and not rev):
                continue
            u_osm, v_osm = w.node_ids[a], w.node_ids[b]
            glon, glat = (lons, lats) if not rev else (lons[::-1], lats[::-1])
            if rev:
                u_osm, v_osm = v_osm, u_osm
            f = flags | (T.FLAG_REVERSE if rev else 0)
            rules = win["backward" if rev else "forward"]
            intervals = [iv for _key, r in rules for iv in r.intervals]
            if intervals:
                f |= T.FLAG_WINDOWS
            row = (node_index[u_osm], node_index[v_osm], w.way_id, piece_no, length, speed, hw)
            out.rows.append((*row, f, int(rev), len(out.geoms)))
            out.geoms.append((glon, glat))
            if intervals:
                out.windows[(piece_no, int(rev))] = sorted(set(intervals))
            if any(r.dated for _key, r in rules):
                out.dated[(piece_no, int(rev))] = [(r.value, key) for key, r in rules]
    return out


def edge_geometry(
    rows: list[Row], geoms: list[tuple[list[float], list[float]]]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[Any], npt.NDArray[Any]]:
    """Edge geometries as one (points, 2) array with offsets, and each edge's bearing at its
    start and at its end."""
    n = len(rows)
    geom_list = [geoms[r[9]] for r in rows]
    counts = np.array([len(g[0]) for g in geom_list], dtype=np.int64)
    geom_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=geom_offsets[1:])
    geom = np.empty((int(geom_offsets[-1]), 2), dtype=np.float64)
    for i, (glon, glat) in enumerate(geom_list):
        geom[geom_offsets[i] : geom_offsets[i + 1], 0] = glon
        geom[geom_offsets[i] : geom_offsets[i + 1], 1] = glat
    b_start = bearing_deg(
        geom[geom_offsets[:-1], 0],
        geom[geom_offsets[:-1], 1],
        geom[geom_offsets[:-1] + 1, 0],
        geom[geom_offsets[:-1] + 1, 1],
    )
    b_end = bearing_deg(
        geom[geom_offsets[1:] - 2, 0],
        geom[geom_offsets[1:] - 2, 1],
        geom[geom_offsets[1:] - 1, 0],
        geom[geom_offsets[1:] - 1, 1],
    )
    return geom_offsets, geom, np.asarray(b_start), np.asarray(b_end)


def _on_pier(
    node_ids: list[int], lons: list[float], lats: list[float], pier_nodes: set[int], pier_union: Any
) -> bool:
    if sum(1 for n in node_ids if n in pier_nodes) >= 2:
        return True
    if pier_union is None:
        return False
    mid = len(lons) // 2
    if len(lons) % 2 == 0:
        x = (lons[mid - 1] + lons[mid]) / 2
        y = (lats[mid - 1] + lats[mid]) / 2
    else:
        x, y = lons[mid], lats[mid]
    return bool(shapely.contains_xy(pier_union, x, y))
