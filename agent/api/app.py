"""The local HTTP API (starlette) that the tablet page and tools read, over the shared state.

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

The map's data (links and street labels) is in :mod:`agent.api.streets`, the OpenAPI document in
:mod:`agent.api.openapi`, the shared :class:`AgentState` in :mod:`agent.api.state`; all are
re-exported here.

The server binds to 127.0.0.1 unless told otherwise: the tablet's browser runs on the same
machine, and nothing here is meant for the network.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from agent.api.openapi import API_SCHEMA_VERSION, openapi_document
from agent.api.state import AgentState
from agent.api.streets import (
    LABEL_RADIUS_M,
    MAX_ROUTE_LABELS,
    network_geojson,
    route_labels,
)
from agent.errors import ApiError
from agent.instruction import Instruction
from tiles import TileStore

log = logging.getLogger(__name__)

__all__ = [
    "API_SCHEMA_VERSION",
    "DEFAULT_NETWORK_RADIUS_M",
    "LABEL_RADIUS_M",
    "MAX_BODY_BYTES",
    "MAX_NETWORK_RADIUS_M",
    "MAX_ROUTE_LABELS",
    "STATIC_DIR",
    "AgentState",
    "create_app",
    "network_geojson",
    "openapi_document",
    "route_labels",
]

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 4096
MAX_NETWORK_RADIUS_M = 2000.0
DEFAULT_NETWORK_RADIUS_M = 800.0


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


class _Endpoints:
    """The request handlers over one :class:`AgentState` (and the labels of the last routes)."""

    def __init__(self, state: AgentState) -> None:
        self.state = state
        self._label_cache: dict[tuple[Any, ...], list[dict[str, Any]]] = {}

    def _labels_for(self, ins: Instruction, store: TileStore | None) -> list[dict[str, Any]]:
        if store is None or not ins.route_edges:
            return []
        where = ins.position or (ins.geometry[0] if ins.geometry else None)
        if where is None:
            return []
        key = (id(store), ins.kind, ins.route_edges)
        if key not in self._label_cache:
            if len(self._label_cache) > 16:
                self._label_cache.clear()
            self._label_cache[key] = route_labels(store, ins.route_edges, where[0], where[1])
        return self._label_cache[key]

    async def instruction(self, request: Request) -> Response:
        ins, bundle, store, _ = self.state.snapshot()
        doc = ins.to_json()
        doc["timezone"] = bundle.get("timezone")
        doc["labels"] = self._labels_for(ins, store)
        return JSONResponse(doc)

    async def network(self, request: Request) -> Response:
        lon = _float_param(request, "lon")
        lat = _float_param(request, "lat")
        radius = _float_param(request, "radius_m", DEFAULT_NETWORK_RADIUS_M)
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise ApiError("lon/lat out of range (lon in [-180, 180], lat in [-90, 90])")
        if not (50.0 <= radius <= MAX_NETWORK_RADIUS_M):
            raise ApiError(f"radius_m must be between 50 and {MAX_NETWORK_RADIUS_M:.0f}")
        _, _, store, _ = self.state.snapshot()
        if store is None:
            raise ApiError("no bundle loaded yet", status=503)
        return JSONResponse(network_geojson(store, lon, lat, radius))

    async def status(self, request: Request) -> Response:
        return JSONResponse(self.state.status())

    async def health(self, request: Request) -> Response:
        h = self.state.health()
        return JSONResponse(h, status_code=200 if h["status"] == "ok" else 503)

    async def meter(self, request: Request) -> Response:
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
        if self.state.on_meter is None:
            raise ApiError("this agent does not log meter events", status=409)
        self.state.on_meter(bool(doc["occupied"]))
        return JSONResponse({"schema_version": API_SCHEMA_VERSION, "occupied": doc["occupied"]})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error(exc.status, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, str(exc.detail))


def create_app(state: AgentState) -> Starlette:
    """The starlette application of the local API over ``state``."""
    ep = _Endpoints(state)
    routes = [
        Route("/", ep.page, methods=["GET"]),
        Route("/v1/instruction", ep.instruction, methods=["GET"]),
        Route("/v1/network", ep.network, methods=["GET"]),
        Route("/v1/status", ep.status, methods=["GET"]),
        Route("/v1/meter", ep.meter, methods=["POST"]),
        Route("/healthz", ep.health, methods=["GET"]),
        Route("/openapi.json", ep.openapi, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)
