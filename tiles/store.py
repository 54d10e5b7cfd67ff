"""Area tiles in SQLite: write once at build time, open read-only in the cab.

Layout (``schema_version`` 1):

* ``meta(key, value)``: schema version, tile size, source file and its sha256, attribution,
  counts and the import summary (JSON).
* ``tiles``: one row per non-empty tile of a regular lon/lat grid (``tile_deg`` degrees); each
  edge lives in the tile of its start node (as in Valhalla), and a tile's edges have the
  contiguous global ids ``first_edge .. first_edge + n_edges - 1``. Its graph is kept as
  fixed-width little-endian numpy arrays in BLOB columns (edge records, geometry, legal turns as
  a successor list, no-entry windows): loading a tile is a few ``frombuffer`` calls, not a loop.
* ``ways`` and ``restrictions``: rows for what an engineer queries (names, tags, how each turn
  restriction was applied).

The reader opens the resolved path with ``mode=ro&immutable=1`` and keeps a bounded LRU cache of
tiles and of the joined graphs built from them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tiles.conditional import Area
from tiles.errors import TilesDataError
from tiles.fileio import sqlite_readonly_uri
from tiles.geo import haversine_m
from tiles.graph import DatedRules, Graph

if TYPE_CHECKING:  # the importer (pyosmium) is for building only, not for the agent
    from tiles._osm import RawGraph

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
ATTRIBUTION = "© OpenStreetMap contributors (ODbL 1.0, https://www.openstreetmap.org/copyright)"
DEFAULT_TILE_DEG = 0.01
TILES_FILENAME = "tiles.sqlite"

EDGE_DTYPE = np.dtype(
    [
        ("u_node", "<i4"),
        ("v_node", "<i4"),
        ("way_id", "<i8"),
        ("length_m", "<f4"),
        ("speed_kph", "<f4"),
        ("highway", "u1"),
        ("pad", "u1"),
        ("flags", "<u2"),
        ("bearing_start", "<f4"),
        ("bearing_end", "<f4"),
        ("u_lon", "<f8"),
        ("u_lat", "<f8"),
        ("v_lon", "<f8"),
        ("v_lat", "<f8"),
    ]
)
WINDOW_DTYPE = np.dtype([("edge", "<i4"), ("start", "<i2"), ("end", "<i2")])


def tile_of(lon: npt.ArrayLike, lat: npt.ArrayLike, tile_deg: float) -> npt.NDArray[np.int64]:
    """Tile id of points on the regular grid (row-major from (-180, -90))."""
    ncols = math.ceil(360.0 / tile_deg)
    tx = np.floor((np.asarray(lon, dtype=np.float64) + 180.0) / tile_deg).astype(np.int64)
    ty = np.floor((np.asarray(lat, dtype=np.float64) + 90.0) / tile_deg).astype(np.int64)
    return ty * ncols + tx


def resolve_tiles_path(path: str | os.PathLike[str]) -> Path:
    """A tile database path from a file or a directory holding ``tiles.sqlite``."""
    p = Path(path)
    if p.is_dir():
        p = p / TILES_FILENAME
    return p


# --------------------------------------------------------------------------- writing


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
        dir_fd = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return summary


def _write_db(
    raw: RawGraph,
    path: Path,
    tile_deg: float,
    source: dict[str, str],
    tile: npt.NDArray[np.int64],
    order: npt.NDArray[np.int64],
    new_id: npt.NDArray[np.int32],
) -> dict[str, Any]:
    import sqlite_utils  # for writing only: the agent reads with sqlite3

    ncols = math.ceil(360.0 / tile_deg)
    db = sqlite_utils.Database(path)
    db.conn.execute("PRAGMA journal_mode=DELETE")
    db.conn.execute("PRAGMA page_size=8192")
    n = raw.n_edges
    rec = np.zeros(n, dtype=EDGE_DTYPE)
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
    rec = rec[order]
    sorted_tile = tile[order]
    # turns, renumbered to new ids, grouped by the new order
    tcounts = np.diff(raw.turn_offsets)[order]
    tstarts = raw.turn_offsets[:-1][order]
    turn_to = (
        np.concatenate(
            [new_id[raw.turn_to[s : s + c]] for s, c in zip(tstarts, tcounts, strict=True)]
        )
        if n
        else np.zeros(0, dtype=np.int32)
    )
    turn_off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(tcounts, out=turn_off[1:])
    gcounts = np.diff(raw.geom_offsets)[order]
    gstarts = raw.geom_offsets[:-1][order]
    geom = np.concatenate(
        [raw.geom_lonlat[s : s + c] for s, c in zip(gstarts, gcounts, strict=True)]
    )
    geom_off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(gcounts, out=geom_off[1:])
    win = np.zeros(raw.win_edge.shape[0], dtype=WINDOW_DTYPE)
    win["edge"] = new_id[raw.win_edge] if raw.win_edge.size else raw.win_edge
    win["start"] = raw.win_start
    win["end"] = raw.win_end
    win = win[np.argsort(win["edge"], kind="stable")]
    win_tile = sorted_tile[win["edge"]] if win.size else np.zeros(0, dtype=np.int64)

    tile_ids, starts, counts = np.unique(sorted_tile, return_index=True, return_counts=True)
    rows = []
    for tid, s, c in zip(tile_ids.tolist(), starts.tolist(), counts.tolist(), strict=True):
        tx = tid % ncols
        ty = tid // ncols
        wsel = win[win_tile == tid]
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
                "windows": wsel.tobytes(),
            }
        )
    db.table("tiles").insert_all(rows, pk="tile_id")
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
    lon = raw.node_lon
    lat = raw.node_lat
    summary = {
        "nodes": raw.n_nodes,
        "directed_edges": n,
        "tiles": len(rows),
        "tile_deg": tile_deg,
        "bbox": [float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())],
        **raw.summary,
    }
    meta = {
        "schema_version": str(SCHEMA_VERSION),
        "attribution": ATTRIBUTION,
        "tile_deg": repr(tile_deg),
        "n_edges": str(n),
        "n_nodes": str(raw.n_nodes),
        "summary": json.dumps(summary, sort_keys=True),
        "conditional_area": json.dumps(
            {"lat_lon": list(raw.area.coords or ()), "country": raw.area.country}
        ),
        **{f"source_{k}": v for k, v in source.items()},
    }
    db.table("meta").insert_all(({"key": k, "value": v} for k, v in meta.items()), pk="key")
    db.conn.commit()
    db.close()
    return summary


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class TileInfo:
    tile_id: int
    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float
    first_edge: int
    n_edges: int


class TileStore:
    """Read-only access to a tile database with a bounded LRU cache of tiles.

    Thread-safe: the agent's HTTP thread and planner may share one store.
    """

    def __init__(
        self, path: str | os.PathLike[str], cache_tiles: int = 256, cache_graphs: int = 8
    ) -> None:
        p = resolve_tiles_path(path)
        if not p.is_file():
            raise TilesDataError(f"tile database not found: {p}")
        self.path = p.resolve()
        uri = sqlite_readonly_uri(self.path)
        try:
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
            rows = self._conn.execute(
                "SELECT tile_id, min_lon, min_lat, max_lon, max_lat, first_edge, n_edges "
                "FROM tiles ORDER BY first_edge"
            ).fetchall()
        except sqlite3.Error as e:
            raise TilesDataError(f"not a nagashi tile database: {p} ({e})") from e
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            raise TilesDataError(
                f"tile database {p} has schema {meta.get('schema_version')!r}, "
                f"expected {SCHEMA_VERSION}"
            )
        self.meta: dict[str, str] = meta
        self.tile_deg = float(meta["tile_deg"])
        self.n_edges_total = int(meta["n_edges"])
        self.tiles = [TileInfo(*r) for r in rows]
        self._tile_by_id = {t.tile_id: t for t in self.tiles}
        self._first_edges = np.array([t.first_edge for t in self.tiles], dtype=np.int64)
        self._tile_bounds = np.array(
            [[t.min_lon, t.min_lat, t.max_lon, t.max_lat] for t in self.tiles], dtype=np.float64
        ).reshape(-1, 4)
        self._cache_tiles = cache_tiles
        self._cache_graphs = cache_graphs
        self._tile_cache: OrderedDict[int, Graph] = OrderedDict()
        self._graph_cache: OrderedDict[tuple[int, ...], Graph] = OrderedDict()
        self._lock = threading.RLock()
        self.tiles_loaded = 0
        self._working: Graph | None = None
        self._working_key: tuple[int, ...] = ()
        self.area = self._read_area()
        self.dated_rules = self._read_dated_rules()

    def _has_table(self, name: str) -> bool:
        # sqlite-utils creates a table on its first insert: a database may lack an empty one
        row = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    def _read_dated_rules(self) -> DatedRules | None:
        """The rules of the links whose no-entry windows depend on the date (few; read once)."""
        if not self._has_table("dated_rules"):
            return None
        try:
            rows = self._conn.execute(
                "SELECT edge, value, kind FROM dated_rules ORDER BY edge, rowid"
            ).fetchall()
        except sqlite3.Error as e:
            raise TilesDataError(f"cannot read the dated rules of {self.path}: {e}") from e
        if not rows:
            return None
        by_edge: dict[int, list[tuple[str, str]]] = {}
        for edge, value, kind in rows:
            by_edge.setdefault(int(edge), []).append((str(value), str(kind)))
        edges = sorted(by_edge)
        return DatedRules(
            edge=np.array(edges, dtype=np.int32),
            rules=tuple(tuple(by_edge[e]) for e in edges),
            area=self.area,
        )

    def _read_area(self) -> Area:
        """Where conditional restrictions are evaluated (sun times, public holidays)."""
        try:
            doc = json.loads(self.meta.get("conditional_area", "{}"))
            coords = doc.get("lat_lon") or None
            return Area(
                coords=(float(coords[0]), float(coords[1])) if coords else None,
                country=doc.get("country"),
            )
        except (ValueError, TypeError, IndexError, AttributeError) as e:
            raise TilesDataError(f"bad conditional_area in {self.path}: {e}") from e

    def conditionals(self) -> list[dict[str, Any]]:
        """Every ``*:conditional`` tag of the extract: way_id, key, value, status, reason."""
        if not self._has_table("conditionals"):
            return []
        cur = self._conn.execute(
            "SELECT way_id, key, value, status, reason FROM conditionals ORDER BY rowid"
        )
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> TileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def summary(self) -> dict[str, Any]:
        return dict(json.loads(self.meta.get("summary", "{}")))

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        b = self.summary["bbox"]
        return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))

    def tile_ids_in_bbox(
        self, min_lon: float, min_lat: float, max_lon: float, max_lat: float
    ) -> list[int]:
        b = self._tile_bounds
        hit = (
            (b[:, 0] <= max_lon)
            & (b[:, 2] >= min_lon)
            & (b[:, 1] <= max_lat)
            & (b[:, 3] >= min_lat)
        )
        return [self.tiles[i].tile_id for i in np.flatnonzero(hit)]

    def tile_of_edge(self, edge_id: int) -> int:
        i = int(np.searchsorted(self._first_edges, edge_id, side="right")) - 1
        if i < 0 or edge_id >= self.n_edges_total:
            raise TilesDataError(f"no edge {edge_id} in {self.path}")
        return self.tiles[i].tile_id

    def load_tile(self, tile_id: int) -> Graph:
        with self._lock:
            g = self._tile_cache.get(tile_id)
            if g is not None:
                self._tile_cache.move_to_end(tile_id)
                return g
            g = self._read_tile(tile_id)
            self._tile_cache[tile_id] = g
            while len(self._tile_cache) > self._cache_tiles:
                self._tile_cache.popitem(last=False)
            return g

    def _read_tile(self, tile_id: int) -> Graph:
        info = self._tile_by_id.get(tile_id)
        if info is None:
            raise TilesDataError(f"no tile {tile_id} in {self.path}")
        try:
            row = self._conn.execute(
                "SELECT edges, geom_offsets, geom, turn_offsets, turn_to, windows "
                "FROM tiles WHERE tile_id = ?",
                (tile_id,),
            ).fetchone()
        except sqlite3.Error as e:
            raise TilesDataError(f"cannot read tile {tile_id} of {self.path}: {e}") from e
        self.tiles_loaded += 1
        rec = np.frombuffer(row[0], dtype=EDGE_DTYPE)
        if rec.shape[0] != info.n_edges:
            raise TilesDataError(f"tile {tile_id} of {self.path} is corrupt")
        win = np.frombuffer(row[5], dtype=WINDOW_DTYPE)
        return Graph(
            edge_id=np.arange(info.first_edge, info.first_edge + info.n_edges, dtype=np.int32),
            u_lon=rec["u_lon"].astype(np.float64),
            u_lat=rec["u_lat"].astype(np.float64),
            v_lon=rec["v_lon"].astype(np.float64),
            v_lat=rec["v_lat"].astype(np.float64),
            u_node=rec["u_node"].astype(np.int32),
            v_node=rec["v_node"].astype(np.int32),
            way_id=rec["way_id"].astype(np.int64),
            length_m=rec["length_m"].astype(np.float32),
            speed_kph=rec["speed_kph"].astype(np.float32),
            highway=rec["highway"].astype(np.uint8),
            flags=rec["flags"].astype(np.uint16),
            bearing_start=rec["bearing_start"].astype(np.float32),
            bearing_end=rec["bearing_end"].astype(np.float32),
            geom_offsets=np.frombuffer(row[1], dtype="<i8").astype(np.int64),
            geom_lonlat=np.frombuffer(row[2], dtype="<f8").astype(np.float64).reshape(-1, 2),
            turn_offsets=np.frombuffer(row[3], dtype="<i8").astype(np.int64),
            turn_to=np.frombuffer(row[4], dtype="<i4").astype(np.int32),
            win_edge=win["edge"].astype(np.int32),
            win_start=win["start"].astype(np.int16),
            win_end=win["end"].astype(np.int16),
            n_edges_total=self.n_edges_total,
            dated=self.dated_rules,
        )

    def graph(self, tile_ids: Iterable[int]) -> Graph:
        """The joined graph of these tiles (cached)."""
        key = tuple(sorted(set(tile_ids)))
        if not key:
            raise TilesDataError("no tile covers the requested area")
        with self._lock:
            g = self._graph_cache.get(key)
            if g is not None:
                self._graph_cache.move_to_end(key)
                return g
            g = Graph.concat([self.load_tile(t) for t in key])
            self._graph_cache[key] = g
            while len(self._graph_cache) > self._cache_graphs:
                self._graph_cache.popitem(last=False)
            return g

    def working_graph(self, tile_ids: Iterable[int], max_tiles: int = 64) -> Graph:
        """A graph covering at least these tiles, reusing the one built last when it does.

        A cab's queries stay in one region: growing one working set of tiles (up to
        ``max_tiles``) keeps a single graph -- and its cached line graph and segment index --
        warm, instead of building a new graph for every slightly different bounding box.
        """
        want = set(tile_ids)
        with self._lock:
            have = set(self._working_key)
            if want <= have and self._working is not None:
                return self._working
            union = have | want
            key = union if len(union) <= max_tiles else want
            self._working = self.graph(key)
            self._working_key = tuple(sorted(key))
            return self._working

    def all(self) -> Graph:
        """The whole network (every tile)."""
        return self.graph(t.tile_id for t in self.tiles)

    def bbox_graph(self, min_lon: float, min_lat: float, max_lon: float, max_lat: float) -> Graph:
        """Edges whose start or end lies inside the box (from the tiles overlapping it)."""
        pad = self.tile_deg
        g = self.graph(
            self.tile_ids_in_bbox(min_lon - pad, min_lat - pad, max_lon + pad, max_lat + pad)
        )
        inside_u = (
            (g.u_lon >= min_lon)
            & (g.u_lon <= max_lon)
            & (g.u_lat >= min_lat)
            & (g.u_lat <= max_lat)
        )
        inside_v = (
            (g.v_lon >= min_lon)
            & (g.v_lon <= max_lon)
            & (g.v_lat >= min_lat)
            & (g.v_lat <= max_lat)
        )
        return g.subset(inside_u | inside_v)

    def radius_graph(self, lon: float, lat: float, radius_m: float) -> Graph:
        """Edges whose start or end lies within ``radius_m`` of the point."""
        dlat = radius_m / 111_195.0
        dlon = dlat / max(math.cos(math.radians(lat)), 1e-6)
        g = self.graph(
            self.tile_ids_in_bbox(
                lon - dlon - self.tile_deg,
                lat - dlat - self.tile_deg,
                lon + dlon + self.tile_deg,
                lat + dlat + self.tile_deg,
            )
        )
        du = haversine_m(lon, lat, g.u_lon, g.u_lat)
        dv = haversine_m(lon, lat, g.v_lon, g.v_lat)
        return g.subset((du <= radius_m) | (dv <= radius_m))

    def way_tags(self, way_id: int) -> dict[str, str]:
        row = self._conn.execute("SELECT tags FROM ways WHERE way_id = ?", (way_id,)).fetchone()
        return dict(json.loads(row[0])) if row else {}

    def way_names(self, way_ids: Iterable[int]) -> dict[int, str]:
        ids = sorted({int(w) for w in way_ids})
        out: dict[int, str] = {}
        for chunk in range(0, len(ids), 500):
            part = ids[chunk : chunk + 500]
            q = f"SELECT way_id, name, tags FROM ways WHERE way_id IN ({','.join('?' * len(part))})"
            for wid, name, tags in self._conn.execute(q, part):
                t = json.loads(tags)
                out[int(wid)] = name or t.get("ref") or t.get("name:en") or ""
        return out

    def restrictions(self) -> list[dict[str, Any]]:
        # sqlite-utils creates the table on first insert: an extract without turn restrictions
        # (Shibuya) has none
        exists = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'restrictions'"
        ).fetchone()
        if exists is None:
            return []
        cur = self._conn.execute(
            "SELECT relation_id, kind, from_way, to_way, via_nodes, via_ways, status, pairs "
            "FROM restrictions"
        )
        cols = [c[0] for c in cur.description]
        out = []
        for row in cur:
            d = dict(zip(cols, row, strict=True))
            for k in ("via_nodes", "via_ways", "pairs"):
                d[k] = json.loads(d[k])
            out.append(d)
        return out

    def node_osm_ids(self) -> npt.NDArray[np.int64]:
        row = self._conn.execute("SELECT data FROM blobs WHERE name = 'node_osm_id'").fetchone()
        return np.frombuffer(row[0], dtype="<i8").astype(np.int64)


@contextmanager
def open_tiles(path: str | os.PathLike[str]) -> Iterator[TileStore]:
    with closing(TileStore(path)) as store:
        yield store
