"""Area tiles in SQLite, read-only in the cab: :class:`TileStore` opens the resolved path with
``mode=ro&immutable=1`` and keeps a bounded LRU cache of tiles and of the joined graphs built
from them.

The layout is in :mod:`tiles.schema`, the writer (build time) in :mod:`tiles.store_write`; both
are re-exported here (``write_tiles`` lazily, so the agent does not load the writer).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tiles._lazy import lazy_attribute
from tiles.conditional import Area
from tiles.errors import TilesDataError
from tiles.fileio import sqlite_readonly_uri
from tiles.graph import DatedRules, Graph
from tiles.schema import (
    ATTRIBUTION,
    DEFAULT_TILE_DEG,
    EDGE_DTYPE,
    SCHEMA_VERSION,
    TILES_FILENAME,
    WINDOW_DTYPE,
    resolve_tiles_path,
    tile_of,
)
from tiles.spatial import within_radius

if TYPE_CHECKING:  # the writer is for building only, not for the agent
    from tiles.store_write import write_tiles

log = logging.getLogger(__name__)

__all__ = [
    "ATTRIBUTION",
    "DEFAULT_TILE_DEG",
    "EDGE_DTYPE",
    "SCHEMA_VERSION",
    "TILES_FILENAME",
    "WINDOW_DTYPE",
    "TileInfo",
    "TileStore",
    "open_tiles",
    "resolve_tiles_path",
    "tile_of",
    "write_tiles",
]

_LAZY = {"write_tiles": "tiles.store_write"}
#: way names kept by an open store (:meth:`TileStore.way_names`)
_WAY_NAMES_KEPT = 200_000


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, globals(), name)


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
        self._way_names: dict[int, str | None] = {}  # way_names' cache (None: no such way)
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
        return g.subset(within_radius(g, lon, lat, radius_m))

    def way_tags(self, way_id: int) -> dict[str, str]:
        row = self._conn.execute("SELECT tags FROM ways WHERE way_id = ?", (way_id,)).fetchone()
        return dict(json.loads(row[0])) if row else {}

    def way_names(self, way_ids: Iterable[int]) -> dict[int, str]:
        """The street name of each way (its ``ref`` or English name without one; a way not in
        the tiles is left out). The database is read-only while open, so the names read are
        kept (every plan names its route's streets: one query a plan, 0.3 ms on Manhattan, for
        the ways not asked before); at most ``_WAY_NAMES_KEPT`` of them."""
        ids = sorted({int(w) for w in way_ids})
        known = self._way_names
        read: dict[int, str] = {}
        missing = [w for w in ids if w not in known]
        for chunk in range(0, len(missing), 500):
            part = missing[chunk : chunk + 500]
            q = f"SELECT way_id, name, tags FROM ways WHERE way_id IN ({','.join('?' * len(part))})"
            with self._lock:
                rows = self._conn.execute(q, part).fetchall()
            for wid, name, tags in rows:
                t = json.loads(tags)
                read[int(wid)] = name or t.get("ref") or t.get("name:en") or ""
        out: dict[int, str] = {}
        for w in ids:
            name = read.get(w) if w in read else known.get(w)
            if name is not None:
                out[w] = name
        if len(known) + len(missing) > _WAY_NAMES_KEPT:
            known.clear()
        for w in missing:  # a way not in the tiles is kept as absent (None)
            known[w] = read.get(w)
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
