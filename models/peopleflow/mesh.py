"""JIS X 0410 1 km mesh codes (地域メッシュコード, 第3次地域区画): the box of a code and the
code of a point (the decoding is described in the :mod:`models.peopleflow` docstring)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]

#: one 1 km (3rd-level) mesh: 30 seconds of latitude, 45 seconds of longitude
MESH_DEG_LAT = 30.0 / 3600.0
MESH_DEG_LON = 45.0 / 3600.0


def mesh1km_box(code: int | str) -> tuple[float, float, float, float]:
    """(min_lon, min_lat, max_lon, max_lat) of an 8-digit JIS X 0410 1 km mesh code.

    Raises ValueError for anything that is not a valid 3rd-level code (8 digits, the 2nd-level
    digits 0-7)."""
    text = str(code)
    if len(text) != 8 or not text.isdigit():
        raise ValueError(f"not an 8-digit 1 km mesh code: {code!r}")
    pq, rs = int(text[0:2]), int(text[2:4])
    t, u, v, w = (int(c) for c in text[4:8])
    if t > 7 or u > 7:
        raise ValueError(f"not a 1 km mesh code (2nd-level digits run 0-7): {code!r}")
    # integer arithmetic in units of one 3rd-level mesh, divided once: exact edges
    rows = pq * 80 + t * 10 + v  # 1st level = 80 meshes of 30" (40'), 2nd = 10
    cols = (100 + rs) * 80 + u * 10 + w  # 1st level = 80 meshes of 45" (1 degree)
    min_lat, min_lon = rows / 120.0, cols / 80.0
    return min_lon, min_lat, (cols + 1) / 80.0, (rows + 1) / 120.0


def mesh1km_of(lon: npt.ArrayLike, lat: npt.ArrayLike) -> I64:
    """The 8-digit 1 km mesh code of points (lon, lat in degrees), vectorised.

    A point on a mesh's south or west edge belongs to that mesh (the standard's squares are
    closed on the south-west)."""
    x = np.asarray(lon, dtype=np.float64)
    y = np.asarray(lat, dtype=np.float64)
    # rows/cols counted in 1 km meshes from (0 N, 100 E); the small epsilon keeps points that
    # lie exactly on an edge (e.g. 35.658333...) in the mesh to their north / east
    rows = np.floor(y * 120.0 + 1e-9).astype(np.int64)
    cols = np.floor((x - 100.0) * 80.0 + 1e-9).astype(np.int64)
    pq, rem_r = np.divmod(rows, 80)
    t, v = np.divmod(rem_r, 10)
    rs, rem_c = np.divmod(cols, 80)
    u, w = np.divmod(rem_c, 10)
    code = pq * 1_000_000 + rs * 10_000 + t * 1000 + u * 100 + v * 10 + w
    return np.asarray(code, dtype=np.int64)
