"""The local HTTP API (starlette) that the tablet page and tools read, and the shared state.

Endpoints (JSON, ``schema_version`` 1; errors are ``{"error": {"status", "message"}}``):

* ``GET /v1/instruction``: the current :class:`~agent.instruction.Instruction`, plus what the
  page needs to draw it: ``timezone`` (the bundle's area, for the clock) and ``labels`` (street
  names to write on the map: the streets of the route and the next cross street ahead).
* ``GET /v1/network?lon=&lat=&radius_m=``: road links around a point as a GeoJSON
  FeatureCollection (what the page draws; radius 50-2000 m, default 800), with street names.
* ``GET /v1/status``: bundle version, sync status, trip-log status, safety counters.
* ``POST /v1/meter``: ``{"occupied": true|false}`` from the taximeter (logged for reports).
* ``GET /healthz``: ``{"status": "ok"|"starting"|"degraded", ...}`` (503 unless ok).
* ``GET /openapi.json``: the OpenAPI 3.1 document of all of the above.
* ``GET /``: the tablet page (``agent/api/static``), fully offline.

The server binds to 127.0.0.1 unless told otherwise: the tablet's browser runs on the same
machine, and nothing here is meant for the network.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from agent.errors import ApiError
from agent.instruction import Instruction, waiting
from tiles import TileStore
from tiles import tags as T

log = logging.getLogger(__name__)

API_SCHEMA_VERSION = 1
STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 4096
MAX_NETWORK_RADIUS_M = 2000.0
DEFAULT_NETWORK_RADIUS_M = 800.0


@dataclass
class AgentState:
    """What the runtime publishes and the API reads; every access goes through the lock."""

    locale: str = "en"
    instruction: Instruction = field(default_factory=lambda: waiting(0.0, "en"))
    bundle: dict[str, Any] = field(default_factory=dict)
    store: TileStore | None = None
    status_providers: dict[str, Callable[[], dict[str, Any]]] = field(default_factory=dict)
    on_meter: Callable[[bool], None] | None = None
    ticks: int = 0
    last_error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def publish(self, instruction: Instruction, *, tick: bool = True) -> None:
        """Show ``instruction``; ``tick=False`` for a position update between planning ticks."""
        with self.lock:
            self.instruction = instruction
            if tick:
                self.ticks += 1

    def snapshot(self) -> tuple[Instruction, dict[str, Any], TileStore | None, int]:
        with self.lock:
            return self.instruction, dict(self.bundle), self.store, self.ticks

    def status(self) -> dict[str, Any]:
        instruction, bundle, _, ticks = self.snapshot()
        out: dict[str, Any] = {
            "schema_version": API_SCHEMA_VERSION,
            "bundle": bundle,
            "ticks": ticks,
            "instruction_kind": instruction.kind,
            "last_error": self.last_error,
        }
        for name, provider in list(self.status_providers.items()):
            try:
                out[name] = provider()
            except Exception as e:  # a status page must not fail because one part did
                out[name] = {"error": f"{type(e).__name__}: {e}"}
        return out

    def health(self) -> dict[str, Any]:
        _instruction, bundle, store, ticks = self.snapshot()
        checks = {
            "bundle_loaded": bool(bundle) and store is not None,
            "ticking": ticks > 0,
        }
        status = "ok" if all(checks.values()) else ("starting" if ticks == 0 else "degraded")
        return {"schema_version": API_SCHEMA_VERSION, "status": status, "checks": checks}


def _float_param(request: Request, name: str, default: float | None = None) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise ApiError(f"query parameter {name!r} is required")
        return default
    try:
        v = float(raw)
    except ValueError:
        raise ApiError(f"query parameter {name!r} must be a number, got {raw!r}") from None
    if not math.isfinite(v):
        raise ApiError(f"query parameter {name!r} must be finite")
    return v


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


def create_app(state: AgentState) -> Starlette:
    label_cache: dict[tuple[Any, ...], list[dict[str, Any]]] = {}

    def labels_for(ins: Instruction, store: TileStore | None) -> list[dict[str, Any]]:
        if store is None or not ins.route_edges:
            return []
        where = ins.position or (ins.geometry[0] if ins.geometry else None)
        if where is None:
            return []
        key = (id(store), ins.kind, ins.route_edges)
        if key not in label_cache:
            if len(label_cache) > 16:
                label_cache.clear()
            label_cache[key] = route_labels(store, ins.route_edges, where[0], where[1])
        return label_cache[key]

    async def instruction(request: Request) -> Response:
        ins, bundle, store, _ = state.snapshot()
        doc = ins.to_json()
        doc["timezone"] = bundle.get("timezone")
        doc["labels"] = labels_for(ins, store)
        return JSONResponse(doc)

    async def network(request: Request) -> Response:
        lon = _float_param(request, "lon")
        lat = _float_param(request, "lat")
        radius = _float_param(request, "radius_m", DEFAULT_NETWORK_RADIUS_M)
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise ApiError("lon/lat out of range (lon in [-180, 180], lat in [-90, 90])")
        if not (50.0 <= radius <= MAX_NETWORK_RADIUS_M):
            raise ApiError(f"radius_m must be between 50 and {MAX_NETWORK_RADIUS_M:.0f}")
        _, _, store, _ = state.snapshot()
        if store is None:
            raise ApiError("no bundle loaded yet", status=503)
        return JSONResponse(network_geojson(store, lon, lat, radius))

    async def status(request: Request) -> Response:
        return JSONResponse(state.status())

    async def health(request: Request) -> Response:
        h = state.health()
        return JSONResponse(h, status_code=200 if h["status"] == "ok" else 503)

    async def meter(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():  # bounded: never buffer more than the cap
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise ApiError("request body too large", status=413)
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError('body must be JSON: {"occupied": true|false}') from None
        if not isinstance(doc, dict) or not isinstance(doc.get("occupied"), bool):
            raise ApiError('body must be {"occupied": true|false}')
        if state.on_meter is None:
            raise ApiError("this agent does not log meter events", status=409)
        state.on_meter(bool(doc["occupied"]))
        return JSONResponse({"schema_version": API_SCHEMA_VERSION, "occupied": doc["occupied"]})

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error(exc.status, str(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail))

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/v1/instruction", instruction, methods=["GET"]),
        Route("/v1/network", network, methods=["GET"]),
        Route("/v1/status", status, methods=["GET"]),
        Route("/v1/meter", meter, methods=["POST"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={ApiError: api_error, HTTPException: http_error},
    )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)


def _schema_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_response(desc: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema}}}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of this API."""
    err = _json_response("bad request", _schema_ref("Error"))
    num = {"type": "number"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nagashi agent local API",
            "version": str(API_SCHEMA_VERSION),
            "description": "Served on loopback for the driver's tablet page and field tools.",
        },
        "paths": {
            "/v1/instruction": {
                "get": {
                    "summary": "The current instruction (route or fallback message)",
                    "responses": {"200": _json_response("ok", _schema_ref("Instruction"))},
                }
            },
            "/v1/network": {
                "get": {
                    "summary": "Road links around a point, GeoJSON",
                    "parameters": [
                        {"name": "lon", "in": "query", "required": True, "schema": num},
                        {"name": "lat", "in": "query", "required": True, "schema": num},
                        {
                            "name": "radius_m",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "number", "minimum": 50, "maximum": 2000},
                        },
                    ],
                    "responses": {
                        "200": _json_response("GeoJSON FeatureCollection", {"type": "object"}),
                        "400": err,
                        "503": _json_response("no bundle loaded", _schema_ref("Error")),
                    },
                }
            },
            "/v1/status": {
                "get": {
                    "summary": "Bundle version, sync, trip log and safety status",
                    "responses": {"200": _json_response("ok", {"type": "object"})},
                }
            },
            "/v1/meter": {
                "post": {
                    "summary": "Taximeter state change (logged for trial reports)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["occupied"],
                                    "properties": {"occupied": {"type": "boolean"}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json_response("logged", {"type": "object"}),
                        "400": err,
                        "409": err,
                        "413": err,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness and readiness",
                    "responses": {
                        "200": _json_response("ok", _schema_ref("Health")),
                        "503": _json_response("starting or degraded", _schema_ref("Health")),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json_response("ok", {"type": "object"})},
                }
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "status": {"type": "integer"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
                "Health": {
                    "type": "object",
                    "properties": {
                        "status": {"enum": ["ok", "starting", "degraded"]},
                        "checks": {"type": "object"},
                    },
                },
                "Instruction": {
                    "type": "object",
                    "required": ["schema_version", "kind", "message", "reason_codes"],
                    "properties": {
                        "schema_version": {"type": "integer"},
                        "kind": {"enum": ["route", "fallback", "waiting"]},
                        "time_s": num,
                        "message": {"type": "string"},
                        "reason_codes": {"type": "array", "items": {"type": "string"}},
                        "locale": {"type": "string"},
                        "route_edges": {"type": "array", "items": {"type": "integer"}},
                        "geometry": {"type": "object", "description": "GeoJSON LineString"},
                        "maneuver": {
                            "type": ["object", "null"],
                            "properties": {
                                "type": {"enum": ["turn", "continue"]},
                                "modifier": {"type": "string"},
                                "distance_m": num,
                                "street": {"type": "string"},
                                "location": {"type": "array", "items": num},
                                "text": {"type": "string"},
                            },
                        },
                        "position": {"type": ["array", "null"], "items": num},
                        "heading_deg": {"type": ["number", "null"]},
                        "tick_seq": {"type": ["integer", "null"]},
                        "expected_revenue": {"type": ["number", "null"]},
                        "timezone": {
                            "type": ["string", "null"],
                            "description": "IANA time zone of the bundle's area (the clock)",
                        },
                        "labels": {
                            "type": "array",
                            "description": "street names to write on the map",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "text": {"type": "string"},
                                    "kind": {"enum": ["route", "cross"]},
                                    "lon": num,
                                    "lat": num,
                                    "bearing_deg": num,
                                },
                            },
                        },
                    },
                },
            }
        },
    }
