"""The OpenAPI 3.1 document of the local API (``GET /openapi.json``): one function per path
group and per schema, put together by :func:`openapi_document`."""

from __future__ import annotations

from typing import Any

#: the API's schema version (``schema_version`` in every answer)
API_SCHEMA_VERSION = 1

_NUM = {"type": "number"}


def _schema_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_response(desc: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema}}}


def _err() -> dict[str, Any]:
    return _json_response("bad request", _schema_ref("Error"))


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of this API."""
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
            "/v1/network": {"get": _network_operation()},
            "/v1/status": {
                "get": {
                    "summary": "Bundle version, sync, trip log and safety status",
                    "responses": {"200": _json_response("ok", {"type": "object"})},
                }
            },
            "/v1/meter": {"post": _meter_operation()},
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
                "Error": _error_schema(),
                "Health": {
                    "type": "object",
                    "properties": {
                        "status": {"enum": ["ok", "starting", "degraded"]},
                        "checks": {"type": "object"},
                    },
                },
                "Instruction": _instruction_schema(),
            }
        },
    }


def _network_operation() -> dict[str, Any]:
    """``GET /v1/network``: road links around a point."""
    return {
        "summary": "Road links around a point, GeoJSON",
        "parameters": [
            {"name": "lon", "in": "query", "required": True, "schema": _NUM},
            {"name": "lat", "in": "query", "required": True, "schema": _NUM},
            {
                "name": "radius_m",
                "in": "query",
                "required": False,
                "schema": {"type": "number", "minimum": 50, "maximum": 2000},
            },
        ],
        "responses": {
            "200": _json_response("GeoJSON FeatureCollection", {"type": "object"}),
            "400": _err(),
            "503": _json_response("no bundle loaded", _schema_ref("Error")),
        },
    }


def _meter_operation() -> dict[str, Any]:
    """``POST /v1/meter``: the taximeter's state."""
    return {
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
            "400": _err(),
            "409": _err(),
            "413": _err(),
        },
    }


def _error_schema() -> dict[str, Any]:
    return {
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
    }


def _instruction_schema() -> dict[str, Any]:
    """:meth:`agent.instruction.Instruction.to_json` plus the page's ``timezone`` and
    ``labels``."""
    return {
        "type": "object",
        "required": ["schema_version", "kind", "message", "reason_codes"],
        "properties": {
            "schema_version": {"type": "integer"},
            "kind": {"enum": ["route", "fallback", "waiting"]},
            "time_s": _NUM,
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
                    "distance_m": _NUM,
                    "street": {"type": "string"},
                    "location": {"type": "array", "items": _NUM},
                    "text": {"type": "string"},
                },
            },
            "position": {"type": ["array", "null"], "items": _NUM},
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
                        "lon": _NUM,
                        "lat": _NUM,
                        "bearing_deg": _NUM,
                    },
                },
            },
        },
    }
