"""Read an OSM extract with pyosmium into a directed, edge-based road graph (untiled).

Ways are split at junctions (nodes shared by two drivable ways), at their ends and at the via
nodes of turn restrictions; each piece becomes one directed edge per allowed direction. Turn
restrictions (``type=restriction``, ``no_*``/``only_*``, via a node) are applied to the
edge-to-edge successor lists. Via-way restrictions cannot be expressed exactly without splitting
states; they are applied conservatively, for every approach to the via way: ``no_*`` bans the
final turn from the via way into the ``to`` way, ``only_*`` makes the ``to`` way the only way on
from the via way at that junction.
Conditional turn restrictions are applied at all times (conservative). Restrictions for other
vehicle classes (``restriction:hgv``, ``restriction:bus``) and those with ``except`` naming
``taxi``/``psv``/``motorcar`` do not bind a taxi and are skipped.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import osmium
import shapely
from shapely.geometry import Polygon

from tiles import tags as T
from tiles.conditional import (
    CLOSING_BY_KIND,
    TAXI_ACCESS_KEYS,
    Area,
    Windows,
    check_country,
    parse_conditional,
)
from tiles.errors import TilesDataError
from tiles.geo import bearing_deg, haversine_m

log = logging.getLogger(__name__)

ProgressFn = Callable[[str], None]


@dataclass
class RawWay:
    way_id: int
    node_ids: list[int]
    lons: list[float]
    lats: list[float]
    tags: dict[str, str]


@dataclass
class RawRestriction:
    relation_id: int
    kind: str  # e.g. "no_left_turn"
    from_way: int
    via_nodes: list[int]
    via_ways: list[int]
    to_way: int


@dataclass
class RawGraph:
    """A directed road graph in memory, edges in a deterministic order (global ids = index)."""

    node_osm_id: npt.NDArray[np.int64]
    node_lon: npt.NDArray[np.float64]
    node_lat: npt.NDArray[np.float64]
    edge_u: npt.NDArray[np.int32]
    edge_v: npt.NDArray[np.int32]
    edge_way: npt.NDArray[np.int64]
    edge_length_m: npt.NDArray[np.float32]
    edge_speed_kph: npt.NDArray[np.float32]
    edge_highway: npt.NDArray[np.uint8]
    edge_flags: npt.NDArray[np.uint16]
    edge_bearing_start: npt.NDArray[np.float32]
    edge_bearing_end: npt.NDArray[np.float32]
    geom_offsets: npt.NDArray[np.int64]
    geom_lonlat: npt.NDArray[np.float64]
    turn_offsets: npt.NDArray[np.int64]
    turn_to: npt.NDArray[np.int32]
    win_edge: npt.NDArray[np.int32]
    win_start: npt.NDArray[np.int16]
    win_end: npt.NDArray[np.int16]
    ways: dict[int, dict[str, str]]
    restrictions: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)
    #: one row per ``*:conditional`` tag: way_id, key, value, status, reason
    conditionals: list[dict[str, Any]] = field(default_factory=list)
    #: (edge index, value, closing kind) of every rule of the edges with a date-dependent one
    dated: list[tuple[int, str, str]] = field(default_factory=list)
    area: Area = field(default_factory=Area)

    @property
    def n_edges(self) -> int:
        return int(self.edge_u.shape[0])

    @property
    def n_nodes(self) -> int:
        return int(self.node_osm_id.shape[0])


class _Collector(osmium.SimpleHandler):
    def __init__(self, progress: ProgressFn | None) -> None:
        super().__init__()
        self.ways: list[RawWay] = []
        self.excluded: Counter[str] = Counter()
        self.pier_polygons: list[Polygon] = []
        self.pier_nodes: set[int] = set()
        self.restrictions: list[RawRestriction] = []
        self.skipped_restrictions: Counter[str] = Counter()
        self.excluded_conditionals: list[dict[str, Any]] = []
        self.progress = progress
        self.n_seen = 0

    def way(self, w: Any) -> None:
        self.n_seen += 1
        if self.progress and self.n_seen % 20000 == 0:
            self.progress(f"read {self.n_seen} ways")
        tags = {t.k: t.v for t in w.tags}
        is_pier_area = (
            tags.get("man_made") == "pier"
            or tags.get("landuse") == "port"
            or tags.get("industrial") == "port"
            or tags.get("harbour") == "yes"
        )
        if is_pier_area and "highway" not in tags:
            coords = [(n.lon, n.lat) for n in w.nodes if n.location.valid()]
            if w.is_closed() and len(coords) >= 4:
                poly = Polygon(coords)
                if not poly.is_valid:
                    poly = shapely.make_valid(poly)
                self.pier_polygons.append(poly)
            else:
                self.pier_nodes.update(n.ref for n in w.nodes)
        if "highway" not in tags:
            return
        reason = T.exclusion_reason(tags)
        if reason is not None:
            self.excluded[reason] += 1
            self._exclude_conditionals(w.id, tags, reason)
            return
        node_ids: list[int] = []
        lons: list[float] = []
        lats: list[float] = []
        for n in w.nodes:
            if not n.location.valid():
                continue
            if node_ids and node_ids[-1] == n.ref:
                continue
            node_ids.append(n.ref)
            lons.append(n.lon)
            lats.append(n.lat)
        if len(node_ids) < 2:
            self.excluded["missing_nodes"] += 1
            self._exclude_conditionals(w.id, tags, "missing_nodes")
            return
        self.ways.append(RawWay(w.id, node_ids, lons, lats, tags))

    def _exclude_conditionals(self, way_id: int, tags: dict[str, str], reason: str) -> None:
        self.excluded_conditionals.extend(
            {"way_id": way_id, "key": k, "value": v, "status": "way_excluded", "reason": reason}
            for k, v in sorted(tags.items())
            if k.endswith(":conditional")
        )

    def relation(self, r: Any) -> None:
        tags = {t.k: t.v for t in r.tags}
        if tags.get("type") == "multipolygon" and (
            tags.get("man_made") == "pier" or tags.get("landuse") == "port"
        ):
            self.skipped_restrictions["pier_multipolygon_not_used"] += 1
        if tags.get("type") != "restriction":
            return
        kind = tags.get("restriction") or tags.get("restriction:motorcar")
        if kind is None and "restriction:conditional" in tags:
            kind = tags["restriction:conditional"].split("@")[0].strip()
        if kind is None:
            self.skipped_restrictions["other_vehicle_class"] += 1
            return
        excepted = {x.strip() for x in tags.get("except", "").split(";")}
        if excepted & {"taxi", "psv", "motorcar"}:
            self.skipped_restrictions["taxi_excepted"] += 1
            return
        frm = [m.ref for m in r.members if m.role == "from" and m.type == "w"]
        to = [m.ref for m in r.members if m.role == "to" and m.type == "w"]
        via_n = [m.ref for m in r.members if m.role == "via" and m.type == "n"]
        via_w = [m.ref for m in r.members if m.role == "via" and m.type == "w"]
        if len(frm) != 1 or len(to) != 1 or not (via_n or via_w):
            self.skipped_restrictions["malformed"] += 1
            return
        if not (kind.startswith("no_") or kind.startswith("only_")):
            self.skipped_restrictions["unknown_kind"] += 1
            return
        self.restrictions.append(RawRestriction(r.id, kind, frm[0], via_n, via_w, to[0]))


def read_osm(
    path: Path, progress: ProgressFn | None = None, country: str | None = None
) -> RawGraph:
    """Import a .osm.pbf (or .osm/.osm.bz2) extract into a :class:`RawGraph`.

    ``country``: ISO code whose public holidays ``PH`` means in conditional restrictions; None:
    the country at the centre of the extract's bounding box (found by the opening_hours library).
    """
    if country is not None:
        try:
            check_country(country)
        except ValueError as e:
            raise TilesDataError(str(e)) from None
    if not path.is_file():
        raise TilesDataError(f"OSM extract not found: {path}")
    if path.stat().st_size == 0:
        raise TilesDataError(f"OSM extract is empty: {path}")
    collector = _Collector(progress)
    try:
        collector.apply_file(str(path), locations=True)
    except (RuntimeError, ValueError, OSError) as e:
        raise TilesDataError(f"cannot read OSM extract {path}: {e}") from e
    if not collector.ways:
        raise TilesDataError(f"no drivable road in {path} ({collector.n_seen} ways read)")
    return _assemble(collector, progress, country)


#: one directed edge before ordering: (u index, v index, way id, piece, length m, speed kph,
#: highway code, flags, reverse, geometry index)
_Row = tuple[int, int, int, int, float, float, int, int, int, int]


def _pieces(
    c: _Collector, ways: list[RawWay]
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


def _area_of(ways: list[RawWay], country: str | None) -> Area:
    """The extract's centre (for sun times and, without ``country``, the holiday calendar)."""
    all_lon = np.fromiter((x for w in ways for x in (min(w.lons), max(w.lons))), dtype=np.float64)
    all_lat = np.fromiter((x for w in ways for x in (min(w.lats), max(w.lats))), dtype=np.float64)
    centre = (
        round(float(all_lat.min() + all_lat.max()) / 2, 4),
        round(float(all_lon.min() + all_lon.max()) / 2, 4),
    )
    return Area(coords=centre, country=country)


def _piece_flags(
    c: _Collector,
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

    rows: list[_Row] = field(default_factory=list)
    geoms: list[tuple[list[float], list[float]]] = field(default_factory=list)
    windows: dict[tuple[int, int], list[tuple[int, int]]] = field(default_factory=dict)
    dated: dict[tuple[int, int], list[tuple[str, str]]] = field(default_factory=dict)
    ways_meta: dict[int, dict[str, str]] = field(default_factory=dict)


def _directed_edges(
    c: _Collector,
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
            way_rules[w.way_id] = _way_conditionals(w, direction, area, cond_rows)
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


def _geometry(
    rows: list[_Row], geoms: list[tuple[list[float], list[float]]]
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


def _assemble(c: _Collector, progress: ProgressFn | None, country: str | None) -> RawGraph:
    """The road graph of an extract: pieces (:func:`_pieces`), directed edges with flags and
    windows (:func:`_directed_edges`), geometry (:func:`_geometry`), legal turns
    (:func:`_turns`) and complex junctions, and the build summary."""
    ways = sorted(c.ways, key=lambda w: w.way_id)
    coord, pieces = _pieces(c, ways)
    node_ids_sorted = sorted({n for w, a, b in pieces for n in (w.node_ids[a], w.node_ids[b])})
    # geometry nodes that are not junctions still need coordinates only through edge geometry
    node_index = {n: i for i, n in enumerate(node_ids_sorted)}
    node_osm = np.array(node_ids_sorted, dtype=np.int64)
    node_lon = np.array([coord[n][0] for n in node_ids_sorted], dtype=np.float64)
    node_lat = np.array([coord[n][1] for n in node_ids_sorted], dtype=np.float64)
    cond_rows: list[dict[str, Any]] = list(c.excluded_conditionals)
    area = _area_of(ways, country)
    d = _directed_edges(c, pieces, node_index, area, cond_rows)
    if not d.rows:
        raise TilesDataError("the extract has drivable ways but no usable road segment")
    # deterministic edge order: by way id, piece, direction (tiling re-sorts by tile later)
    rows = sorted(d.rows, key=lambda r: (r[2], r[3], r[8]))
    n = len(rows)
    edge_u = np.array([r[0] for r in rows], dtype=np.int32)
    edge_v = np.array([r[1] for r in rows], dtype=np.int32)
    edge_way = np.array([r[2] for r in rows], dtype=np.int64)
    edge_flags = np.array([r[7] for r in rows], dtype=np.uint16)
    geom_offsets, geom, b_start, b_end = _geometry(rows, d.geoms)
    win = [(i, s, e) for i, r in enumerate(rows) for s, e in d.windows.get((r[3], r[8]), [])]
    dated_rows: list[tuple[int, str, str]] = [
        (i, value, kind)
        for i, r in enumerate(rows)
        for value, kind in d.dated.get((r[3], r[8]), [])
    ]
    piece_of_edge = np.array([r[3] for r in rows], dtype=np.int64)
    succ, restr_rows, restr_stats = _turns(
        edge_u, edge_v, edge_way, piece_of_edge, node_osm, c.restrictions
    )
    _flag_complex_junctions(edge_u, edge_v, edge_way, edge_flags, len(node_osm))
    turn_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(s) for s in succ], out=turn_offsets[1:])
    summary: dict[str, Any] = {
        "drivable_ways": len(ways),
        "excluded_ways": dict(sorted(c.excluded.items())),
        "restrictions": dict(sorted(restr_stats.items())),
        "restrictions_skipped": dict(sorted(c.skipped_restrictions.items())),
        "conditional": _conditional_summary(cond_rows, area),
        "pier_polygons": len(c.pier_polygons),
        "edges_by_flag": {
            name: int(np.count_nonzero(edge_flags & bit)) for name, bit in T.FLAG_NAMES.items()
        },
    }
    if progress:
        progress(f"graph: {len(node_osm)} nodes, {n} directed edges")
    return RawGraph(
        node_osm_id=node_osm,
        node_lon=node_lon,
        node_lat=node_lat,
        edge_u=edge_u,
        edge_v=edge_v,
        edge_way=edge_way,
        edge_length_m=np.array([r[4] for r in rows], dtype=np.float32),
        edge_speed_kph=np.array([r[5] for r in rows], dtype=np.float32),
        edge_highway=np.array([r[6] for r in rows], dtype=np.uint8),
        edge_flags=edge_flags,
        edge_bearing_start=b_start.astype(np.float32),
        edge_bearing_end=b_end.astype(np.float32),
        geom_offsets=geom_offsets,
        geom_lonlat=geom,
        turn_offsets=turn_offsets,
        turn_to=np.array([x for s in succ for x in s], dtype=np.int32),
        win_edge=np.array([w[0] for w in win], dtype=np.int32),
        win_start=np.array([w[1] for w in win], dtype=np.int16),
        win_end=np.array([w[2] for w in win], dtype=np.int16),
        ways=d.ways_meta,
        conditionals=cond_rows,
        dated=dated_rows,
        area=area,
        restrictions=restr_rows,
        summary=summary,
    )


_SIDES: tuple[tuple[str, str], ...] = (
    ("both", ":conditional"),
    ("forward", ":forward:conditional"),
    ("backward", ":backward:conditional"),
)


def _status(r: Windows) -> str:
    if r.doubts:
        return "closed_for_doubt"
    if r.dated:
        return "dated"
    return "windows" if r.intervals else "no_closing_rule"


def _reason(r: Windows) -> str:
    return "; ".join((*r.doubts, *r.skipped, *r.normalized))


def _way_conditionals(
    w: RawWay, direction: int, area: Area, out: list[dict[str, Any]]
) -> dict[str, list[tuple[str, Windows]]]:
    """The no-entry rules of each direction of a way (closing kind, parsed value); one report
    row per ``*:conditional`` tag into ``out``."""
    t = w.tags
    rules: dict[str, list[tuple[str, Windows]]] = {"forward": [], "backward": []}
    seen: set[str] = set()
    for key in TAXI_ACCESS_KEYS:
        for side, suffix in _SIDES:
            value = t.get(key + suffix)
            if value is None:
                continue
            seen.add(key + suffix)
            r = parse_conditional(value, CLOSING_BY_KIND["access"], area)
            status = _status(r)
            if status != "no_closing_rule":
                for d in ("forward", "backward") if side == "both" else (side,):
                    rules[d].append(("access", r))
            out.append(_row(w.way_id, key + suffix, value, status, _reason(r)))
    value = t.get("oneway:conditional")
    if value is not None:
        seen.add("oneway:conditional")
        fw = parse_conditional(value, CLOSING_BY_KIND["oneway:forward"], area)
        bw = parse_conditional(value, CLOSING_BY_KIND["oneway:backward"], area)
        if fw.malformed:
            # unreadable: one-way (in the way's direction) at all times, the reverse closed
            if direction == 0:
                rules["backward"].append(("oneway:backward", bw))
            status, reason = "closed_for_doubt", _reason(bw) + "; one-way at all times"
        else:
            for d, kind, r in (
                ("forward", "oneway:forward", fw),
                ("backward", "oneway:backward", bw),
            ):
                if _status(r) != "no_closing_rule":
                    rules[d].append((kind, r))
            statuses = {_status(fw), _status(bw)} - {"no_closing_rule"}
            status = min(statuses) if statuses else "no_closing_rule"
            reason = "; ".join(dict.fromkeys(x for x in (_reason(fw), _reason(bw)) if x))
            if direction != 0 and "'no'" in reason:
                reason += "; the way stays one-way at all times (its relaxation is not used)"
        out.append(_row(w.way_id, "oneway:conditional", value, status, reason))
    for key, value in sorted(t.items()):
        if key.endswith(":conditional") and key not in seen:
            out.append(_row(w.way_id, key, value, "ignored_key", "not about a taxi's access"))
    return rules


def _row(way_id: int, key: str, value: str, status: str, reason: str) -> dict[str, Any]:
    return {"way_id": way_id, "key": key, "value": value, "status": status, "reason": reason}


def _conditional_summary(rows: list[dict[str, Any]], area: Area) -> dict[str, Any]:
    return {
        "values": len(rows),
        "by_status": dict(sorted(Counter(r["status"] for r in rows).items())),
        "closed_for_doubt": [
            {k: r[k] for k in ("way_id", "key", "value", "reason")}
            for r in rows
            if r["status"] == "closed_for_doubt"
        ],
        "area": {"lat_lon": list(area.coords or ()), "country": area.country or "from lat_lon"},
    }


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


def _turns(
    edge_u: npt.NDArray[np.int32],
    edge_v: npt.NDArray[np.int32],
    edge_way: npt.NDArray[np.int64],
    piece: npt.NDArray[np.int64],
    node_osm: npt.NDArray[np.int64],
    restrictions: list[RawRestriction],
) -> tuple[list[list[int]], list[dict[str, Any]], Counter[str]]:
    """Successor lists per edge after U-turn and restriction rules."""
    n = len(edge_u)
    out_of: dict[int, list[int]] = defaultdict(list)
    for e in range(n):
        out_of[int(edge_u[e])].append(e)
    banned: set[tuple[int, int]] = set()
    only: dict[int, set[int]] = {}
    node_of_osm = {int(x): i for i, x in enumerate(node_osm)}
    edges_of_way: dict[int, list[int]] = defaultdict(list)
    for e in range(n):
        edges_of_way[int(edge_way[e])].append(e)
    stats: Counter[str] = Counter()
    rows: list[dict[str, Any]] = []

    def into(way: int, node: int) -> list[int]:
        return [e for e in edges_of_way.get(way, []) if edge_v[e] == node]

    def outof(way: int, node: int) -> list[int]:
        return [e for e in edges_of_way.get(way, []) if edge_u[e] == node]

    for r in restrictions:
        status = "applied"
        pairs: list[tuple[int, int]] = []
        if r.via_nodes and not r.via_ways:
            via = node_of_osm.get(r.via_nodes[0])
            if via is None:
                status = "via_outside_graph"
            else:
                froms = into(r.from_way, via)
                tos = outof(r.to_way, via)
                if r.from_way == r.to_way:
                    tos = [t for t in tos for f in froms if piece[t] == piece[f]]
                if not froms or not tos:
                    status = "ways_not_at_via"
                else:
                    pairs = [(f, t) for f in froms for t in tos]
        elif r.via_ways:
            # conservative, for every approach (the state would need the way the cab came by):
            # no_*: the final turn from the last via way into the to way is banned;
            # only_*: from the last via way at that junction, the to way is the only way on
            end_nodes = {int(edge_u[e]) for e in edges_of_way.get(r.to_way, [])}
            last_via = r.via_ways[-1]
            pairs = [
                (f, t)
                for f in edges_of_way.get(last_via, [])
                for t in outof(r.to_way, int(edge_v[f]))
                if int(edge_v[f]) in end_nodes and edge_way[t] != last_via
            ]
            status = "applied_conservative_via_way" if pairs else "ways_not_connected"
        stats[status] += 1
        if pairs:
            if r.kind.startswith("no_"):
                banned.update(pairs)
            else:
                mine: dict[int, set[int]] = defaultdict(set)
                for f, t in pairs:
                    mine[f].add(t)
                for f, ts in mine.items():
                    # two only_* restrictions on one link: each must hold, so intersect
                    only[f] = only[f] & ts if f in only else ts
        rows.append(
            {
                "relation_id": r.relation_id,
                "kind": r.kind,
                "from_way": r.from_way,
                "to_way": r.to_way,
                "via_nodes": r.via_nodes,
                "via_ways": r.via_ways,
                "status": status,
                "pairs": [[int(f), int(t)] for f, t in pairs],
            }
        )

    succ: list[list[int]] = []
    for e in range(n):
        cands = out_of.get(int(edge_v[e]), [])
        uturn = [f for f in cands if edge_v[f] == edge_u[e] and piece[f] == piece[e]]
        nonu = [f for f in cands if f not in uturn]
        allowed = nonu if nonu else uturn  # U-turn only at dead ends
        if e in only:
            allowed = [f for f in cands if f in only[e]]
        allowed = [f for f in allowed if (e, f) not in banned]
        succ.append(sorted(allowed))
    return succ, rows, stats


def _flag_complex_junctions(
    edge_u: npt.NDArray[np.int32],
    edge_v: npt.NDArray[np.int32],
    edge_way: npt.NDArray[np.int64],
    flags: npt.NDArray[np.uint16],
    n_nodes: int,
) -> None:
    """Flag edges ending at a junction where five or more distinct ways meet."""
    ways_at: dict[int, set[int]] = defaultdict(set)
    for u, v, w in zip(edge_u.tolist(), edge_v.tolist(), edge_way.tolist(), strict=True):
        ways_at[u].add(w)
        ways_at[v].add(w)
    complex_nodes = np.zeros(n_nodes, dtype=bool)
    for node, ws in ways_at.items():
        if len(ws) >= 5:
            complex_nodes[node] = True
    flags[complex_nodes[edge_v]] |= np.uint16(T.FLAG_COMPLEX)
