"""Small geodesy helpers, vectorised with numpy. Coordinates are ``(lon, lat)`` in WGS84."""

from __future__ import annotations

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
