"""The values one tick hands to the safety gate: the GPS fix, the bundle's status, the area."""

from __future__ import annotations

import datetime as dt
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from models import DemandTable, TickDemand
from safety.errors import SafetyInputError
from tiles import Graph, Match


@dataclass(frozen=True)
class Fix:
    """One GPS fix: what the agent's GPS sources yield and what the gate judges. ``time_s`` is
    UNIX seconds (UTC), on the same clock as the gate's injected ``now_s``.

    ``heading_deg`` (clockwise from north), ``speed_mps`` and ``accuracy_m`` (68 % radius) may
    be ``None`` when the receiver does not report them; a NaN heading reads as "no heading".
    """

    time_s: float
    lon: float
    lat: float
    heading_deg: float | None = None
    speed_mps: float | None = None
    accuracy_m: float | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "time_s": self.time_s,
            "lon": self.lon,
            "lat": self.lat,
            "heading_deg": self.heading_deg,
            "speed_mps": self.speed_mps,
            "accuracy_m": self.accuracy_m,
        }

    @staticmethod
    def from_record(r: Mapping[str, Any]) -> Fix:
        """The fix of a trip-log record (numbers as floats, as they were logged)."""

        def opt(key: str) -> float | None:
            v = r.get(key)
            return None if v is None else float(v)

        return Fix(
            time_s=float(r["time_s"]),
            lon=float(r["lon"]),
            lat=float(r["lat"]),
            heading_deg=opt("heading_deg"),
            speed_mps=opt("speed_mps"),
            accuracy_m=opt("accuracy_m"),
        )


@dataclass(frozen=True)
class BundleStatus:
    """What sync/ knows about the active bundle, as plain values.

    ``present``: a bundle is active; ``hash_ok``: its files matched the manifest's sha256 when
    last verified; ``expires_at_s``: end of validity on the ``now_s`` clock (None: no expiry).
    """

    present: bool
    hash_ok: bool = True
    expires_at_s: float | None = None
    bundle_hash: str = ""


def bbox_area_geojson(
    bbox: tuple[float, float, float, float] | Sequence[float], name: str
) -> dict[str, Any]:
    """A business area covering a bounding box (min lon, min lat, max lon, max lat), as the
    GeoJSON FeatureCollection a bundle's ``area.geojson`` holds (without its ``version``)."""
    x0, y0, x1, y1 = (float(v) for v in bbox)
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"name": name},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        ],
    }


class BusinessArea:
    """The business area (a polygon in lon/lat) and which links of a graph lie inside it.

    A link is inside when both its ends are. Masks are cached per graph (weakly).
    """

    def __init__(self, geometry: BaseGeometry) -> None:
        if geometry.is_empty:
            raise SafetyInputError("business area is empty")
        self.geometry = geometry
        shapely.prepare(geometry)
        self._masks: weakref.WeakKeyDictionary[Graph, npt.NDArray[np.bool_]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    @staticmethod
    def from_geojson(doc: Mapping[str, Any]) -> BusinessArea:
        """From a GeoJSON Polygon/MultiPolygon, Feature or FeatureCollection (lon, lat)."""
        try:
            kind = doc.get("type")
            if kind == "FeatureCollection":
                geoms = [shape(f["geometry"]) for f in doc.get("features", [])]
                if not geoms:
                    raise SafetyInputError("business area has no features")
                return BusinessArea(shapely.union_all(geoms))
            if kind == "Feature":
                return BusinessArea(shape(doc["geometry"]))
            return BusinessArea(shape(doc))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise SafetyInputError(f"business area is not a GeoJSON polygon: {e}") from e

    @staticmethod
    def from_bbox(min_lon: float, min_lat: float, max_lon: float, max_lat: float) -> BusinessArea:
        return BusinessArea(box(min_lon, min_lat, max_lon, max_lat))

    def contains(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Points inside the area (boundary counts as inside)."""
        x = np.asarray(lon, dtype=np.float64)
        y = np.asarray(lat, dtype=np.float64)
        inside = shapely.contains_xy(self.geometry, x, y) | shapely.intersects_xy(
            self.geometry.boundary, x, y
        )
        return np.asarray(inside, dtype=bool)

    def edge_mask(self, g: Graph) -> npt.NDArray[np.bool_]:
        with self._lock:
            m = self._masks.get(g)
            if m is None:
                m = self.contains(g.u_lon, g.u_lat) & self.contains(g.v_lon, g.v_lat)
                self._masks[g] = m
            return m


@dataclass(frozen=True)
class TickInput:
    """Everything one tick's safety decision depends on.

    * ``now_s``: the injected clock (same clock as ``Fix.time_s`` and bundle expiry).
    * ``minute_of_week``: local time of the area (Monday 00:00 = 0), fractional minutes allowed.
    * ``graph``: the road graph around the cab (the one the planner used); ``route``: the
      planner's proposal, global edge ids starting on (or just after) the matched link.
    * ``match``: the agent's map match of ``fix``; when None the gate matches ``fix`` itself.
    * ``demand``/``demand_table``: the tick's demand and the bundle's statistics to judge it by.
    * ``last_moving_fix``: the latest fix with a finite heading taken at or above
      ``GpsConfig.min_speed_for_heading_mps`` (the agent keeps it; log it with the tick): a cab
      stopped at a light keeps that heading instead of losing guidance.
    """

    now_s: float
    minute_of_week: float
    fix: Fix | None
    graph: Graph | None
    route: Sequence[int] | None = None
    previous_fix: Fix | None = None
    match: Match | None = None
    bundle: BundleStatus | None = None
    demand: TickDemand | None = None
    demand_table: DemandTable | None = None
    last_moving_fix: Fix | None = None
    #: local date of the Monday of ``minute_of_week``'s week: no-entry windows that depend on
    #: the date (public holidays, months, sun times) are judged on the real dates; None: an
    #: ordinary week
    monday: dt.date | None = None
