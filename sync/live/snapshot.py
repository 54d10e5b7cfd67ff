"""The live snapshot (:class:`Snapshot`: aggregates only) and its signed body's format:
:func:`encode_body` and :func:`decode_body` (shape and bounds checked; no signature, no clock)."""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

from sync.errors import LiveInputError
from sync.live.protocol import _AREA, MAX_EDGE_ID, SNAPSHOT_SCHEMA, _int_in

I64 = npt.NDArray[np.int64]

GridSpec = tuple[float, float, float, float, int, int]  # min_lon, min_lat, dlon, dlat, cols, rows


@dataclass(frozen=True, eq=False)
class Snapshot:
    """A live snapshot of one area: aggregates only (see the module docstring)."""

    area: str
    version: int
    built_s: float
    expires_s: float
    network: str  # sha256 (hex) of the road network the link ids refer to; "" unknown
    grid: GridSpec | None  # the demand model's 500 m cell grid (cells are its indices)
    vacant_cabs: int  # cabs reporting vacant now (in the area)
    occupied_cabs: int
    link_ids: I64  # sorted global edge ids with a nonzero count
    vacant_now: I64  # vacant cabs on the link now
    planned: I64  # passes planned by vacant cabs' routes (the next ~2 km each)
    cell_ids: I64  # sorted cell indices with a pickup in the last hour
    pickups: I64  # shape (len(cell_ids), 3): last 15, 30, 60 minutes
    sha256: str = ""  # of the signed envelope (what the archive and the tick log name)

    def link_counts(self, edge_ids: npt.ArrayLike) -> tuple[I64, I64]:
        """``(vacant_now, planned)`` for each of ``edge_ids`` (global ids; 0 when absent)."""
        ids = np.asarray(edge_ids, dtype=np.int64)
        now = np.zeros(ids.shape, dtype=np.int64)
        planned = np.zeros(ids.shape, dtype=np.int64)
        if len(self.link_ids):
            pos = np.searchsorted(self.link_ids, ids)
            pos = np.minimum(pos, len(self.link_ids) - 1)
            hit = self.link_ids[pos] == ids
            now[hit] = self.vacant_now[pos[hit]]
            planned[hit] = self.planned[pos[hit]]
        return now, planned

    def cell_pickups(self, n_cells: int) -> I64:
        """Pickups per cell as an ``(n_cells, 3)`` array (last 15, 30, 60 minutes)."""
        out = np.zeros((n_cells, 3), dtype=np.int64)
        ok = self.cell_ids < n_cells
        out[self.cell_ids[ok]] = self.pickups[ok]
        return out


def grid_spec(grid_json: dict[str, Any]) -> GridSpec:
    """The grid of a demand.json ``grid`` object (models.CellGrid.to_json)."""
    return (
        float(grid_json["min_lon"]),
        float(grid_json["min_lat"]),
        float(grid_json["cell_deg_lon"]),
        float(grid_json["cell_deg_lat"]),
        int(grid_json["ncols"]),
        int(grid_json["nrows"]),
    )


_BODY_KEYS = frozenset(
    {"schema", "area", "version", "built_s", "expires_s", "network", "grid", "cabs"}
    | {"links", "now", "planned", "cells", "pickups"}
)


def _delta(ids: I64) -> bytes:
    """Sorted ids as uint32 gaps (the first from 0): small numbers that deflate well."""
    return np.diff(ids, prepend=0).astype("<u4").tobytes()


def _undelta(b: bytes, n_max: int) -> I64:
    if len(b) % 4 or len(b) // 4 > n_max:
        raise LiveInputError("id array of bad length")
    gaps = np.frombuffer(b, dtype="<u4").astype(np.int64)
    ids = np.cumsum(gaps)
    if len(ids) > 1 and not bool(np.all(gaps[1:] > 0)):
        raise LiveInputError("ids are not strictly increasing")
    if len(ids) and ids[-1] > MAX_EDGE_ID:
        raise LiveInputError("id out of range")
    return ids


def encode_body(s: Snapshot) -> bytes:
    """The snapshot's signed body: a msgpack map of scalars and little-endian arrays (ids as
    uint32 gaps, counts uint16), deflated. Decoded by :func:`decode_body`."""
    doc = {
        "schema": SNAPSHOT_SCHEMA,
        "area": s.area,
        "version": s.version,
        "built_s": s.built_s,
        "expires_s": s.expires_s,
        "network": s.network,
        "grid": list(s.grid) if s.grid is not None else None,
        "cabs": [s.vacant_cabs, s.occupied_cabs],
        "links": _delta(s.link_ids),
        "now": s.vacant_now.astype("<u2").tobytes(),
        "planned": s.planned.astype("<u2").tobytes(),
        "cells": _delta(s.cell_ids),
        "pickups": s.pickups.astype("<u2").tobytes(),
    }
    return zlib.compress(msgpack.packb(doc, use_bin_type=True), 6)


def _inflate(data: bytes, max_bytes: int) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, max_bytes + 1)
    except zlib.error as e:
        raise LiveInputError(f"body is not deflate: {e}") from e
    if len(out) > max_bytes or not d.eof or d.unused_data:
        raise LiveInputError(f"body inflates past {max_bytes} bytes or is not one stream")
    return out


def _counts(b: object, n: int, what: str, cols: int = 1) -> I64:
    if type(b) is not bytes or len(b) != 2 * n * cols:
        raise LiveInputError(f"{what} does not match its ids")
    a = np.frombuffer(b, dtype="<u2").astype(np.int64)
    return a.reshape(n, cols) if cols > 1 else a


def _finite(v: object, what: str) -> float:
    # exactly int or float (not bool, not a subclass): isinstance would let True through
    if (type(v) is not int and type(v) is not float) or not math.isfinite(v):
        raise LiveInputError(f"{what} must be a finite number")
    return float(v)


def decode_body(body: bytes, *, sha256: str = "", max_bytes: int = 8 << 20) -> Snapshot:
    """Parse a signed body (shape and bounds checked; no signature, no clock)."""
    raw = _inflate(body, max_bytes)
    try:
        doc = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as e:
        raise LiveInputError(f"body is not msgpack: {type(e).__name__}") from e
    if not isinstance(doc, dict) or set(doc) != _BODY_KEYS:
        raise LiveInputError("body has missing or unknown fields")
    if doc["schema"] != SNAPSHOT_SCHEMA:
        raise LiveInputError(f"unknown snapshot schema {doc['schema']!r}")
    area = doc["area"]
    if not isinstance(area, str) or not _AREA.match(area):
        raise LiveInputError("bad area")
    version = _int_in(doc["version"], 1, (1 << 63) - 1, "version")
    built, expires = _finite(doc["built_s"], "built_s"), _finite(doc["expires_s"], "expires_s")
    if not built <= expires:
        raise LiveInputError("expires_s before built_s")
    network = doc["network"]
    if not isinstance(network, str) or not re.fullmatch(r"(?:[0-9a-f]{64})?", network):
        raise LiveInputError("network must be 64 lowercase hex or empty")
    grid: GridSpec | None = None
    g = doc["grid"]
    if g is not None:
        if not isinstance(g, list) or len(g) != 6:
            raise LiveInputError("grid must be [min_lon, min_lat, dlon, dlat, ncols, nrows]")
        f = [_finite(x, "grid") for x in g[:4]]
        cols = _int_in(g[4], 1, 1 << 20, "grid ncols")
        rows = _int_in(g[5], 1, 1 << 20, "grid nrows")
        if f[2] <= 0 or f[3] <= 0:
            raise LiveInputError("grid cell sizes must be positive")
        grid = (f[0], f[1], f[2], f[3], cols, rows)
    cabs = doc["cabs"]
    if not isinstance(cabs, list) or len(cabs) != 2:
        raise LiveInputError("cabs must be [vacant, occupied]")
    nv = _int_in(cabs[0], 0, 1 << 31, "cabs")
    no = _int_in(cabs[1], 0, 1 << 31, "cabs")
    for k in ("links", "now", "planned", "cells", "pickups"):
        if type(doc[k]) is not bytes:
            raise LiveInputError(f"{k} must be bytes")
    link_ids = _undelta(doc["links"], max_bytes // 4)
    cell_ids = _undelta(doc["cells"], max_bytes // 4)
    if grid is None and len(cell_ids):
        raise LiveInputError("cells without a grid")
    if grid is not None and len(cell_ids) and cell_ids[-1] >= grid[4] * grid[5]:
        raise LiveInputError("cell outside the grid")
    return Snapshot(
        area=area,
        version=version,
        built_s=built,
        expires_s=expires,
        network=network,
        grid=grid,
        vacant_cabs=nv,
        occupied_cabs=no,
        link_ids=link_ids,
        vacant_now=_counts(doc["now"], len(link_ids), "now"),
        planned=_counts(doc["planned"], len(link_ids), "planned"),
        cell_ids=cell_ids,
        pickups=_counts(doc["pickups"], len(cell_ids), "pickups", 3),
        sha256=sha256,
    )
