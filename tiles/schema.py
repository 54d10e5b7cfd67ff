"""The tile database's layout (``schema_version`` 1), shared by its writer
(:mod:`tiles.store_write`) and its reader (:mod:`tiles.store`):

* ``meta(key, value)``: schema version, tile size, source file and its sha256, attribution,
  counts and the import summary (JSON).
* ``tiles``: one row per non-empty tile of a regular lon/lat grid (``tile_deg`` degrees); each
  edge lives in the tile of its start node (as in Valhalla), and a tile's edges have the
  contiguous global ids ``first_edge .. first_edge + n_edges - 1``. Its graph is kept as
  fixed-width little-endian numpy arrays in BLOB columns (edge records, geometry, legal turns as
  a successor list, no-entry windows): loading a tile is a few ``frombuffer`` calls, not a loop.
* ``ways`` and ``restrictions``: rows for what an engineer queries (names, tags, how each turn
  restriction was applied); ``conditionals`` (every ``*:conditional`` tag and its status),
  ``dated_rules`` (the rules of links whose windows depend on the date) and ``blobs``
  (``node_osm_id``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

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
