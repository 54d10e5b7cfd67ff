"""Writing a tile database (build time only; the layout is in :mod:`tiles.schema`):
:func:`write_tiles` orders the edges by tile, renumbers them, and writes every table in one
temporary file that replaces ``out`` atomically."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tiles.errors import TilesDataError
from tiles.fileio import fsync_dir
from tiles.schema import ATTRIBUTION, EDGE_DTYPE, SCHEMA_VERSION, WINDOW_DTYPE, tile_of

if TYPE_CHECKING:  # the importer (pyosmium) is for building only, not for the agent
    import sqlite_utils

    from tiles._osm import RawGraph

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]


def write_tiles(
    raw: RawGraph, out: Path, tile_deg: float, source: dict[str, str]
) -> dict[str, Any]:
    """Write ``raw`` as tiles to ``out`` atomically; return the summary stored in ``meta``."""
    if not (0.0005 <= tile_deg <= 1.0):
        raise TilesDataError(f"--tile-deg must be between 0.0005 and 1, got {tile_deg}")
    u_lon = raw.node_lon[raw.edge_u]
    u_lat = raw.node_lat[raw.edge_u]
    tile = tile_of(u_lon, u_lat, tile_deg)
    order = np.lexsort((np.arange(raw.n_edges), tile))  # stable: by tile, then import order
    new_id = np.empty(raw.n_edges, dtype=np.int32)
    new_id[order] = np.arange(raw.n_edges, dtype=np.int32)

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tiles-", suffix=".sqlite.tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        summary = _write_db(raw, tmp, tile_deg, source, tile, order, new_id)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return summary


def _write_db(
    raw: RawGraph,
    path: Path,
    tile_deg: float,
    source: dict[str, str],
    tile: I64,
    order: I64,
    new_id: I32,
) -> dict[str, Any]:
    """Every table into the new database at ``path``; the summary."""
    import sqlite_utils  # for writing only: the agent reads with sqlite3

    db = sqlite_utils.Database(path)
    db.conn.execute("PRAGMA journal_mode=DELETE")
    db.conn.execute("PRAGMA page_size=8192")
    rows = _tile_rows(raw, tile_deg, tile, order, new_id)
    db.table("tiles").insert_all(rows, pk="tile_id")
    _insert_lookup_tables(db, raw, new_id)
    summary = _summary(raw, len(rows), tile_deg)
    db.table("meta").insert_all(
        ({"key": k, "value": v} for k, v in _meta(raw, summary, tile_deg, source).items()),
        pk="key",
    )
    db.conn.commit()
    db.close()
    return summary


def _edge_records(raw: RawGraph, order: I64) -> npt.NDArray[np.void]:
    """The fixed-width edge records (``EDGE_DTYPE``), in the new (tile) order."""
    rec = np.zeros(raw.n_edges, dtype=EDGE_DTYPE)
    rec["u_node"] = raw.edge_u
    rec["v_node"] = raw.edge_v
    rec["way_id"] = raw.edge_way
    rec["length_m"] = raw.edge_length_m
    rec["speed_kph"] = raw.edge_speed_kph
    rec["highway"] = raw.edge_highway
    rec["flags"] = raw.edge_flags
    rec["bearing_start"] = raw.edge_bearing_start
    rec["bearing_end"] = raw.edge_bearing_end
    rec["u_lon"] = raw.node_lon[raw.edge_u]
    rec["u_lat"] = raw.node_lat[raw.edge_u]
    rec["v_lon"] = raw.node_lon[raw.edge_v]
    rec["v_lat"] = raw.node_lat[raw.edge_v]
    return rec[order]


def _regroup(offsets: I64, values: npt.NDArray[Any], order: I64) -> tuple[npt.NDArray[Any], I64]:
    """A per-edge list (``values[offsets[e]:offsets[e + 1]]``) in the new edge order: the
    values and their new offsets."""
    counts = np.diff(offsets)[order]
    starts = offsets[:-1][order]
    out = (
        np.concatenate([values[s : s + c] for s, c in zip(starts, counts, strict=True)])
        if order.size
        else values[:0]
    )
    new_offsets = np.zeros(order.size + 1, dtype=np.int64)
    np.cumsum(counts, out=new_offsets[1:])
    return out, new_offsets


def _sorted_windows(raw: RawGraph, new_id: I32, sorted_tile: I64) -> tuple[Any, I64]:
    """The no-entry windows (``WINDOW_DTYPE``) by new edge id, and the tile of each."""
    win = np.zeros(raw.win_edge.shape[0], dtype=WINDOW_DTYPE)
    win["edge"] = new_id[raw.win_edge] if raw.win_edge.size else raw.win_edge
    win["start"] = raw.win_start
    win["end"] = raw.win_end
    win = win[np.argsort(win["edge"], kind="stable")]
    win_tile = sorted_tile[win["edge"]] if win.size else np.zeros(0, dtype=np.int64)
    return win, win_tile


def _tile_rows(
    raw: RawGraph, tile_deg: float, tile: I64, order: I64, new_id: I32
) -> list[dict[str, Any]]:
    """One ``tiles`` row per non-empty tile: its bounds, edge range and graph BLOBs."""
    ncols = math.ceil(360.0 / tile_deg)
    rec = _edge_records(raw, order)
    sorted_tile = tile[order]
    # turns, renumbered to new ids, grouped by the new order
    turn_to, turn_off = _regroup(raw.turn_offsets, raw.turn_to, order)
    turn_to = new_id[turn_to]
    geom, geom_off = _regroup(raw.geom_offsets, raw.geom_lonlat, order)
    win, win_tile = _sorted_windows(raw, new_id, sorted_tile)
    tile_ids, starts, counts = np.unique(sorted_tile, return_index=True, return_counts=True)
    rows = []
    for tid, s, c in zip(tile_ids.tolist(), starts.tolist(), counts.tolist(), strict=True):
        tx = tid % ncols
        ty = tid // ncols
        rows.append(
            {
                "tile_id": tid,
                "tx": tx,
                "ty": ty,
                "min_lon": tx * tile_deg - 180.0,
                "min_lat": ty * tile_deg - 90.0,
                "max_lon": (tx + 1) * tile_deg - 180.0,
                "max_lat": (ty + 1) * tile_deg - 90.0,
                "first_edge": s,
                "n_edges": c,
                "edges": rec[s : s + c].tobytes(),
                "geom_offsets": (geom_off[s : s + c + 1] - geom_off[s]).astype("<i8").tobytes(),
                "geom": geom[geom_off[s] : geom_off[s + c]].astype("<f8").tobytes(),
                "turn_offsets": (turn_off[s : s + c + 1] - turn_off[s]).astype("<i8").tobytes(),
                "turn_to": turn_to[turn_off[s] : turn_off[s + c]].astype("<i4").tobytes(),
                "windows": win[win_tile == tid].tobytes(),
            }
        )
    return rows


def _insert_lookup_tables(db: sqlite_utils.Database, raw: RawGraph, new_id: I32) -> None:
    """The tables an engineer queries (ways, restrictions, conditionals), the dated rules and
    the nodes' OSM ids, edges named by their new ids."""
    db.table("ways").insert_all(
        (
            {
                "way_id": w,
                "name": t.get("name"),
                "highway": t.get("highway"),
                "tags": json.dumps(t, ensure_ascii=False, sort_keys=True),
            }
            for w, t in sorted(raw.ways.items())
        ),
        pk="way_id",
    )
    db.table("restrictions").insert_all(
        (
            {
                **{k: v for k, v in r.items() if k not in {"pairs", "via_nodes", "via_ways"}},
                "via_nodes": json.dumps(r["via_nodes"]),
                "via_ways": json.dumps(r["via_ways"]),
                "pairs": json.dumps([[int(new_id[f]), int(new_id[t])] for f, t in r["pairs"]]),
            }
            for r in raw.restrictions
        ),
        columns={
            "relation_id": int,
            "kind": str,
            "from_way": int,
            "to_way": int,
            "via_nodes": str,
            "via_ways": str,
            "status": str,
            "pairs": str,
        },
    )
    db.table("conditionals").insert_all(
        raw.conditionals,
        columns={"way_id": int, "key": str, "value": str, "status": str, "reason": str},
    )
    db.table("dated_rules").insert_all(
        ({"edge": int(new_id[e]), "value": v, "kind": k} for e, v, k in raw.dated),
        columns={"edge": int, "value": str, "kind": str},
    )
    db.table("blobs").insert(
        {"name": "node_osm_id", "data": raw.node_osm_id.astype("<i8").tobytes()}, pk="name"
    )


def _summary(raw: RawGraph, n_tiles: int, tile_deg: float) -> dict[str, Any]:
    lon = raw.node_lon
    lat = raw.node_lat
    return {
        "nodes": raw.n_nodes,
        "directed_edges": raw.n_edges,
        "tiles": n_tiles,
        "tile_deg": tile_deg,
        "bbox": [float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())],
        **raw.summary,
    }


def _meta(
    raw: RawGraph, summary: dict[str, Any], tile_deg: float, source: dict[str, str]
) -> dict[str, str]:
    """The ``meta`` table: schema, attribution, counts, summary, where rules are evaluated."""
    return {
        "schema_version": str(SCHEMA_VERSION),
        "attribution": ATTRIBUTION,
        "tile_deg": repr(tile_deg),
        "n_edges": str(raw.n_edges),
        "n_nodes": str(raw.n_nodes),
        "summary": json.dumps(summary, sort_keys=True),
        "conditional_area": json.dumps(
            {"lat_lon": list(raw.area.coords or ()), "country": raw.area.country}
        ),
        **{f"source_{k}": v for k, v in source.items()},
    }
