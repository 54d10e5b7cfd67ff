"""The import in order (:func:`read_osm`): collect, split, direct, geometry, turns, summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tiles import tags as T
from tiles._osm.collect import Collector, ProgressFn
from tiles._osm.conditionals import conditional_summary
from tiles._osm.edges import area_of, directed_edges, edge_geometry, split_ways
from tiles._osm.graph import RawGraph
from tiles._osm.turns import flag_complex_junctions, legal_turns
from tiles.conditional import check_country
from tiles.errors import TilesDataError


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
    collector = Collector(progress)
    try:
        collector.apply_file(str(path), locations=True)
    except (RuntimeError, ValueError, OSError) as e:
        raise TilesDataError(f"cannot read OSM extract {path}: {e}") from e
    if not collector.ways:
        raise TilesDataError(f"no drivable road in {path} ({collector.n_seen} ways read)")
    return _assemble(collector, progress, country)


def _assemble(c: Collector, progress: ProgressFn | None, country: str | None) -> RawGraph:
    """The road graph of an extract: pieces (:func:`split_ways`), directed edges with flags and
    windows (:func:`_directed_edges`), geometry (:func:`_geometry`), legal turns
    (:func:`_turns`) and complex junctions, and the build summary."""
    ways = sorted(c.ways, key=lambda w: w.way_id)
    coord, pieces = split_ways(c, ways)
    node_ids_sorted = sorted({n for w, a, b in pieces for n in (w.node_ids[a], w.node_ids[b])})
    # geometry nodes that are not junctions still need coordinates only through edge geometry
    node_index = {n: i for i, n in enumerate(node_ids_sorted)}
    node_osm = np.array(node_ids_sorted, dtype=np.int64)
    node_lon = np.array([coord[n][0] for n in node_ids_sorted], dtype=np.float64)
    node_lat = np.array([coord[n][1] for n in node_ids_sorted], dtype=np.float64)
    cond_rows: list[dict[str, Any]] = list(c.excluded_conditionals)
    area = area_of(ways, country)
    d = directed_edges(c, pieces, node_index, area, cond_rows)
    if not d.rows:
        raise TilesDataError("the extract has drivable ways but no usable road segment")
    # deterministic edge order: by way id, piece, direction (tiling re-sorts by tile later)
    rows = sorted(d.rows, key=lambda r: (r[2], r[3], r[8]))
    n = len(rows)
    edge_u = np.array([r[0] for r in rows], dtype=np.int32)
    edge_v = np.array([r[1] for r in rows], dtype=np.int32)
    edge_way = np.array([r[2] for r in rows], dtype=np.int64)
    edge_flags = np.array([r[7] for r in rows], dtype=np.uint16)
    geom_offsets, geom, b_start, b_end = edge_geometry(rows, d.geoms)
    win = [(i, s, e) for i, r in enumerate(rows) for s, e in d.windows.get((r[3], r[8]), [])]
    dated_rows: list[tuple[int, str, str]] = [
        (i, value, kind)
        for i, r in enumerate(rows)
        for value, kind in d.dated.get((r[3], r[8]), [])
    ]
    piece_of_edge = np.array([r[3] for r in rows], dtype=np.int64)
    succ, restr_rows, restr_stats = legal_turns(
        edge_u, edge_v, edge_way, piece_of_edge, node_osm, c.restrictions
    )
    flag_complex_junctions(edge_u, edge_v, edge_way, edge_flags, len(node_osm))
    turn_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(s) for s in succ], out=turn_offsets[1:])
    summary: dict[str, Any] = {
        "drivable_ways": len(ways),
        "excluded_ways": dict(sorted(c.excluded.items())),
        "restrictions": dict(sorted(restr_stats.items())),
        "restrictions_skipped": dict(sorted(c.skipped_restrictions.items())),
        "conditional": conditional_summary(cond_rows, area),
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
