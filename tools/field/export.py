"""``nagashi export geojson|html``: a drive, its recommendations and fallbacks on a map.

GeoJSON (RFC 7946, lon/lat; loads in QGIS and kepler.gl) with one FeatureCollection:

* ``kind: drive``: the 1 Hz track of each shift (LineString), with its run id and times;
* ``kind: recommendation``: each validated route when it changed (LineString), with the tick
  seq, time, next manoeuvre and expected revenue per hour;
* ``kind: guidance`` / ``kind: fallback``: one Point per tick at the fix, with the instruction
  kind, message, reason codes and the matched link;
* ``kind: meter``: taximeter events (Point).

HTML: one self-contained file (the GeoJSON inline, an SVG renderer inline, no tiles, fonts or
scripts from anywhere) that opens offline in a browser, with a scale bar. Given the bundle's
tiles (``tiles``: a tile database, its directory or a bundle directory), the road network
around the drive is drawn under it, with its street names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.triplog import read_trip_log
from tiles.fileio import atomic_write_bytes
from tools.field.logpaths import trip_log_paths
from tools.field.shifts import group_shifts

STATIC = Path(__file__).resolve().parent  # export.html beside this module


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat()


def to_geojson(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    feats: list[dict[str, Any]] = []
    for s in group_shifts(records):
        if len(s.track) >= 2:
            feats.append(
                {
                    "type": "Feature",
                    "geometry": {
                        "type": "LineString",
                        "coordinates": [[round(p[1], 7), round(p[2], 7)] for p in s.track],
                    },
                    "properties": {
                        "kind": "drive",
                        "run_id": s.run_id,
                        "vehicle_id": s.vehicle_id,
                        "start": _iso(s.track[0][0]),
                        "end": _iso(s.track[-1][0]),
                        "distance_m": round(float(s.steps_m().sum()), 1),
                    },
                }
            )
        last_route: list[int] | None = None
        for t in s.ticks:
            ins = t.get("instruction") or {}
            fix = t.get("fix")
            kind = ins.get("kind")
            man = ins.get("maneuver") or {}
            props = {
                "kind": "guidance" if kind == "route" else "fallback",
                "run_id": s.run_id,
                "seq": t.get("seq"),
                "time": _iso(float(t["time_s"])),
                "trigger": t.get("trigger"),
                "message": ins.get("message", ""),
                "maneuver": man.get("text", ""),
                "reason_codes": ",".join(ins.get("reason_codes", [])),
                "edge_id": (t.get("match") or {}).get("edge_id"),
                "bundle": str((t.get("bundle") or {}).get("id", ""))[:12],
            }
            if fix is not None and fix.get("lon") is not None and fix.get("lat") is not None:
                feats.append(
                    {
                        "type": "Feature",
                        "geometry": {"type": "Point", "coordinates": [fix["lon"], fix["lat"]]},
                        "properties": props,
                    }
                )
            coords = (ins.get("geometry") or {}).get("coordinates") or []
            edges = list(ins.get("route_edges", []))
            if kind == "route" and len(coords) >= 2 and edges[1:] != (last_route or [])[1:]:
                feats.append(
                    {
                        "type": "Feature",
                        "geometry": {"type": "LineString", "coordinates": coords},
                        "properties": {
                            **props,
                            "kind": "recommendation",
                            "expected_revenue_per_h": ins.get("expected_revenue"),
                        },
                    }
                )
                last_route = edges
        for t_s, occ in s.meters:
            pos = _position_at(s.track, t_s)
            if pos is not None:
                feats.append(
                    {
                        "type": "Feature",
                        "geometry": {"type": "Point", "coordinates": list(pos)},
                        "properties": {
                            "kind": "meter",
                            "run_id": s.run_id,
                            "time": _iso(t_s),
                            "occupied": occ,
                        },
                    }
                )
    return {"type": "FeatureCollection", "features": feats}


def _position_at(
    track: list[tuple[float, float, float, float | None]], t: float
) -> tuple[float, float] | None:
    before = [p for p in track if p[0] <= t]
    p = before[-1] if before else (track[0] if track else None)
    return None if p is None else (p[1], p[2])


def export_geojson(logs: Iterable[str | os.PathLike[str]], out: Path) -> dict[str, Any]:
    doc = to_geojson(read_trip_log(trip_log_paths(logs)))
    atomic_write_bytes(out, json.dumps(doc, ensure_ascii=False).encode())
    return _counts(doc)


ROAD_MARGIN_DEG = 0.003  # about 300 m of roads around the drive


def road_network(tiles: str | os.PathLike[str], doc: dict[str, Any]) -> dict[str, Any]:
    """The road links around the features of ``doc`` as GeoJSON LineStrings (one per road
    segment, both directions merged), with their street names: the map under the drive."""
    from tiles import TileStore

    coords = [
        c
        for f in doc["features"]
        for c in (
            [f["geometry"]["coordinates"]]
            if f["geometry"]["type"] == "Point"
            else f["geometry"]["coordinates"]
        )
    ]
    if not coords:
        return {"type": "FeatureCollection", "features": []}
    lons, lats = [c[0] for c in coords], [c[1] for c in coords]
    m = ROAD_MARGIN_DEG
    with TileStore(tiles) as store:
        g = store.bbox_graph(min(lons) - m, min(lats) - m, max(lons) + m, max(lats) + m)
        names = store.way_names(int(w) for w in g.way_id)
    feats: list[dict[str, Any]] = []
    seen: set[tuple[int, int, int]] = set()
    for i in range(g.n):
        u, v = int(g.u_node[i]), int(g.v_node[i])
        key = (min(u, v), max(u, v), int(g.way_id[i]))
        if key in seen:
            continue
        seen.add(key)
        feats.append(
            {
                "type": "Feature",
                "geometry": {
                    "type": "LineString",
                    "coordinates": [[round(x, 6), round(y, 6)] for x, y in g.geometry(i)],
                },
                "properties": {"name": names.get(int(g.way_id[i]), "")},
            }
        )
    return {"type": "FeatureCollection", "features": feats}


def export_html(
    logs: Iterable[str | os.PathLike[str]],
    out: Path,
    title: str,
    tiles: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    doc = to_geojson(read_trip_log(trip_log_paths(logs)))
    roads = road_network(tiles, doc) if tiles is not None else None
    template = (STATIC / "export.html").read_text(encoding="utf-8")
    data = json.dumps(doc, ensure_ascii=False).replace("</", "<\\/")
    road_data = json.dumps(roads, ensure_ascii=False).replace("</", "<\\/")
    html = (
        template.replace("__TITLE__", _escape(title))
        .replace("__ROADS__", road_data)
        .replace("__GEOJSON__", data)
    )
    atomic_write_bytes(out, html.encode("utf-8"))
    return _counts(doc)


def _escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _counts(doc: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in doc["features"]:
        k = f["properties"]["kind"]
        out[k] = out.get(k, 0) + 1
    return out
