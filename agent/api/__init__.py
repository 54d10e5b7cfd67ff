"""The local HTTP API and the tablet page, on loopback only.

* :mod:`agent.api.state`: the shared :class:`AgentState` the runtime publishes into (no web
  framework: the runtime imports it before its first tick);
* :mod:`agent.api.app`: the starlette application (``/v1/instruction``, ``/v1/network``,
  ``/v1/status``, ``/v1/meter``, ``/healthz``, ``/openapi.json``, the page in ``static/``);
* :mod:`agent.api.server`: uvicorn in a background thread (:class:`ApiServer`), ``--api``.

The names below are imported on first use, so that ``from agent.api import AgentState`` does
not load starlette.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tiles._lazy import lazy_attribute

if TYPE_CHECKING:  # the types, for mypy and editors; at run time see __getattr__
    from agent.api.app import STATIC_DIR, create_app
    from agent.api.openapi import API_SCHEMA_VERSION, openapi_document
    from agent.api.state import AgentState
    from agent.api.streets import network_geojson

_LAZY: dict[str, str] = {
    "API_SCHEMA_VERSION": "agent.api.openapi",
    "STATIC_DIR": "agent.api.app",
    "AgentState": "agent.api.state",
    "create_app": "agent.api.app",
    "network_geojson": "agent.api.streets",
    "openapi_document": "agent.api.openapi",
}

__all__ = [
    "API_SCHEMA_VERSION",
    "STATIC_DIR",
    "AgentState",
    "create_app",
    "network_geojson",
    "openapi_document",
]


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, globals(), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
