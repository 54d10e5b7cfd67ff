"""Small geodesy helpers, vectorised with numpy. Coordinates are ``(lon, lat)`` in WGS84."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

EARTH_RADIUS_M = 6_371_008.8

FloatArray = npt.NDArray[np.float64]


def _rad(a: npt.ArrayLike) -> FloatArray:
    return np.radians(np.asarray(a, dtype=np.float64))


def haversine_m(
    lon1: npt.ArrayLike, lat1: npt.ArrayLike, lon2: npt.ArrayLike, lat2: npt.ArrayLike
) -> FloatArray:
    """Great-circle distance in metres (element-wise)."""
    lo1, la1, lo2, la2 = (
        np.radians(np.asarray(a, dtype=np.float64)) for a in (lon1, lat1, lon2, lat2)
    )
    dlat = la2 - la1
    dlon = lo2 - lo1
    a = np.sin(dlat / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin(dlon / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))


def bearing_deg(
    lon1: npt.ArrayLike, lat1: npt.ArrayLike, lon2: npt.ArrayLike, lat2: npt.ArrayLike
) -> FloatArray:
    """Initial bearing from point 1 to point 2, degrees clockwise from north in [0, 360)."""
    lo1, la1, lo2, la2 = (
        np.radians(np.asarray(a, dtype=np.float64)) for a in (lon1, lat1, lon2, lat2)
    )
    dlon = lo2 - lo1
    x = np.sin(dlon) * np.cos(la2)
    y = np.cos(la1) * np.sin(la2) - np.sin(la1) * np.cos(la2) * np.cos(dlon)
    return np.asarray(np.degrees(np.arctan2(x, y)) % 360.0)


def angle_diff_deg(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """Absolute difference of two headings in degrees, in [0, 180]."""
    d = np.abs((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) % 360.0)
    return np.asarray(np.minimum(d, 360.0 - d))


def signed_turn_deg(bearing_in: npt.ArrayLike, bearing_out: npt.ArrayLike) -> FloatArray:
    """Signed turn angle from one heading to the next, in (-180, 180]; positive is right."""
    d = (
        np.asarray(bearing_out, dtype=np.float64) - np.asarray(bearing_in, dtype=np.float64)
    ) % 360.0
    return np.asarray(np.where(d > 180.0, d - 360.0, d))


class LocalProjection:
    """Equirectangular projection to metres around a reference latitude (~0.1% over 10 km)."""

    def __init__(self, lon0: float, lat0: float) -> None:
        self.lon0 = float(lon0)
        self.lat0 = float(lat0)
        self.kx = np.radians(1.0) * EARTH_RADIUS_M * np.cos(np.radians(lat0))
        self.ky = np.radians(1.0) * EARTH_RADIUS_M

    def to_xy(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        x = (np.asarray(lon, dtype=np.float64) - self.lon0) * self.kx
        y = (np.asarray(lat, dtype=np.float64) - self.lat0) * self.ky
        return x, y

    def to_lonlat(self, x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        lon = np.asarray(x, dtype=np.float64) / self.kx + self.lon0
        lat = np.asarray(y, dtype=np.float64) / self.ky + self.lat0
        return lon, lat


def project_onto_line(
    coords: Sequence[tuple[float, float]],
    lon: float,
    lat: float,
    lo_m: float = 0.0,
    hi_m: float = math.inf,
) -> tuple[float, float]:
    """``(along_m, off_m)``: where the point projects onto the polyline ``coords`` ((lon, lat)
    pairs), as the distance along the line, and how far from the line it is, in metres (a local
    plane around the point). Only the part of the line between ``lo_m`` and ``hi_m`` along it is
    considered, so that a route passing the same street twice is measured on the pass the cab
    is on. An empty line gives ``(lo_m, inf)``; a single point, its distance. The one
    point-to-line projection of the project (the agent's countdown and its off-route check)."""
    if not coords:
        return lo_m, math.inf
    proj = LocalProjection(lon, lat)
    pts = [(float(x), float(y)) for x, y in (proj.to_xy(a, b) for a, b in coords)]
    if len(pts) == 1:
        return lo_m, math.hypot(*pts[0])
    best = (math.inf, lo_m)
    walked = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        dx, dy = x1 - x0, y1 - y0
        seg = math.hypot(dx, dy)
        a, b = max(lo_m - walked, 0.0), min(hi_m - walked, seg)  # the usable part of the segment
        if a <= b and seg > 0:
            s = min(max(-(x0 * dx + y0 * dy) / seg, a), b)
            off = math.hypot(x0 + s / seg * dx, y0 + s / seg * dy)
            if off < best[0]:
                best = (off, walked + s)
        walked += seg
        if walked > hi_m:
            break
    return best[1], best[0]
