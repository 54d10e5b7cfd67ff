"""What the tablet page draws besides the route: the road links around the cab as GeoJSON
(:func:`network_geojson`, ``GET /v1/network``) and the street names to write on the map
(:func:`route_labels`, in ``GET /v1/instruction``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tiles import TileStore
from tiles import tags as T


def network_geojson(store: TileStore, lon: float, lat: float, radius_m: float) -> dict[str, Any]:
    """Road links within ``radius_m`` (one feature per road segment, both directions merged)."""
    g = store.radius_graph(lon, lat, radius_m)
    names = store.way_names(int(w) for w in g.way_id)
    feats: list[dict[str, Any]] = []
    seen: set[tuple[int, int, int]] = set()
    for i in range(g.n):
        u, v = int(g.u_node[i]), int(g.v_node[i])
        key = (min(u, v), max(u, v), int(g.way_id[i]))
        if key in seen:
            continue
        seen.add(key)
        flags = int(g.flags[i])
        geom = g.geometry(i)
        feats.append(
            {
                "type": "Feature",
                "geometry": {
                    "type": "LineString",
                    "coordinates": np.round(geom, 6).tolist(),
                },
                "properties": {
                    "edge_id": int(g.edge_id[i]),
                    "highway": T.HIGHWAY_CLASSES[int(g.highway[i])],
                    "name": names.get(int(g.way_id[i]), ""),
                    "cruise_forbidden": bool(flags & T.CRUISE_FORBIDDEN),
                },
            }
        )
    return {
        "type": "FeatureCollection",
        "features": feats,
        "properties": {"center": [lon, lat], "radius_m": radius_m},
    }


LABEL_RADIUS_M = 1000.0
MAX_ROUTE_LABELS = 4


def _label(g: Any, links: list[int], text: str, kind: str) -> dict[str, Any]:
    """A label half way along consecutive local links, along the street there."""
    pts = np.vstack([g.geometry(i) for i in links])
    kx = math.cos(math.radians(float(pts[0, 1])))
    seg = np.hypot(np.diff(pts[:, 0]) * kx, np.diff(pts[:, 1]))
    if float(seg.sum()) <= 0:
        k, mid = 0, pts[0]
    else:
        cum = np.cumsum(seg)
        k = int(np.searchsorted(cum, cum[-1] / 2))
        f = (cum[-1] / 2 - (cum[k] - seg[k])) / seg[k] if seg[k] > 0 else 0.0
        mid = pts[k] + f * (pts[k + 1] - pts[k])
    a, b = pts[k], pts[min(k + 1, len(pts) - 1)]
    bearing = math.degrees(math.atan2((b[0] - a[0]) * kx, b[1] - a[1])) % 360.0
    return {
        "text": text,
        "kind": kind,
        "lon": round(float(mid[0]), 7),
        "lat": round(float(mid[1]), 7),
        "bearing_deg": round(bearing, 1),
    }


def route_labels(
    store: TileStore, route_edges: tuple[int, ...], lon: float, lat: float
) -> list[dict[str, Any]]:
    """Street names to write on the map for a route (or a "follow the road" continuation):
    one ``route`` label per street along it (half way along it, first few streets), and one
    ``cross`` label for the first other named street that meets the route ahead of the cab."""
    if not route_edges:
        return []
    g = store.radius_graph(lon, lat, LABEL_RADIUS_M)
    loc = [int(i) for i in g.local(list(route_edges)) if i >= 0]
    if not loc:
        return []
    names = store.way_names(int(w) for w in g.way_id)
    name_of = [names.get(int(w), "") for w in g.way_id]
    out: list[dict[str, Any]] = []
    groups: list[list[int]] = []
    for i in loc:
        if groups and name_of[groups[-1][-1]] == name_of[i]:
            groups[-1].append(i)
        else:
            groups.append([i])
    labelled: set[str] = set()
    for grp in groups:
        name = name_of[grp[0]]
        if name and name not in labelled and len(labelled) < MAX_ROUTE_LABELS:
            labelled.add(name)
            out.append(_label(g, grp, name, "route"))
    on_route = set(loc)
    for k, i in enumerate(loc):
        here = {name_of[i]} | ({name_of[loc[k + 1]]} if k + 1 < len(loc) else set())
        v = int(g.v_node[i])
        meets = np.nonzero((g.u_node == v) | (g.v_node == v))[0]
        for j in sorted(int(j) for j in meets):
            if j not in on_route and name_of[j] and name_of[j] not in here:
                out.append(_label(g, [j], name_of[j], "cross"))
                return out
    return out
