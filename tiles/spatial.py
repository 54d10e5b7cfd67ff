"""Which links of a graph lie near a point: the planner's radius graph, cut every tick.

:func:`within_radius` gives exactly the mask of ``haversine_m(point, start) <= r`` or
``haversine_m(point, end) <= r`` (the same bits as computing both distances in full), faster:
the radians and the cosines of the links' end points are computed once per graph (kept with
the graph, weakly: a new bundle's graph gets its own), and the arc sine and square root of
the haversine are evaluated only for the links within a relative 1e-9 of the radius, every
other link being decided by comparing the haversine term ``a`` itself with ``sin²(r / 2R)``
(``d = 2R asin(√a)`` is increasing in ``a``, and its rounding is some 1e-16 relative).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tiles.geo import EARTH_RADIUS_M
from tiles.graph import Graph

F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

#: the margin (relative, on the haversine term) inside which the distance is computed in full
_MARGIN = 1e-9


@dataclass(frozen=True, eq=False)
class _Ends:
    """Radians of a graph's link ends and the cosines of their latitudes."""

    u_lon: F64
    u_lat: F64
    u_cos: F64
    v_lon: F64
    v_lat: F64
    v_cos: F64


_ENDS: weakref.WeakKeyDictionary[Graph, _Ends] = weakref.WeakKeyDictionary()


def _ends(g: Graph) -> _Ends:
    hit = _ENDS.get(g)
    if hit is None:
        u_lat = np.radians(np.asarray(g.u_lat, dtype=np.float64))
        v_lat = np.radians(np.asarray(g.v_lat, dtype=np.float64))
        hit = _Ends(
            np.radians(np.asarray(g.u_lon, dtype=np.float64)),
            u_lat,
            np.cos(u_lat),
            np.radians(np.asarray(g.v_lon, dtype=np.float64)),
            v_lat,
            np.cos(v_lat),
        )
        _ENDS[g] = hit
    return hit


def _haversine_term(lo1: F64, la1: F64, lon: F64, lat: F64, cos_lat: F64) -> F64:
    """``a`` of :func:`tiles.geo.haversine_m`, with the same operations in the same order."""
    a: F64 = np.sin((lat - la1) / 2) ** 2 + np.cos(la1) * cos_lat * np.sin((lon - lo1) / 2) ** 2
    return a


def _within(a: F64, radius_m: float) -> Bool:
    """``2R asin(√clip(a, 0, 1)) <= radius_m``, as :func:`tiles.geo.haversine_m` rounds it."""
    half = radius_m / (2 * EARTH_RADIUS_M)
    if not 0.0 < half < 1.5:  # beyond a quarter of the globe (or no radius): in full
        return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))) <= radius_m)
    a_r = math.sin(half) ** 2
    inside = a <= a_r * (1.0 - _MARGIN)
    unsure = np.flatnonzero(~inside & ~(a >= a_r * (1.0 + _MARGIN)))  # NaN too
    if unsure.shape[0]:
        d = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a[unsure], 0.0, 1.0)))
        inside[unsure] = d <= radius_m
    return np.asarray(inside)


def within_radius(g: Graph, lon: float, lat: float, radius_m: float) -> Bool:
    """Links of ``g`` whose start or end lies within ``radius_m`` metres (great circle) of
    ``(lon, lat)``: the mask of :func:`tiles.geo.haversine_m` ``<= radius_m``, bit for bit."""
    e = _ends(g)
    lo1 = np.radians(np.asarray(lon, dtype=np.float64))
    la1 = np.radians(np.asarray(lat, dtype=np.float64))
    du = _within(_haversine_term(lo1, la1, e.u_lon, e.u_lat, e.u_cos), radius_m)
    dv = _within(_haversine_term(lo1, la1, e.v_lon, e.v_lat, e.v_cos), radius_m)
    return np.asarray(du | dv)
