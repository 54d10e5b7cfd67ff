"""The local HTTP API and the tablet page, on loopback only.

* :mod:`agent.api.app`: the shared :class:`AgentState` the runtime publishes into, and the
  starlette application (``/v1/instruction``, ``/v1/network``, ``/v1/status``, ``/v1/meter``,
  ``/healthz``, ``/openapi.json``, the page in ``static/``);
* :mod:`agent.api.server`: uvicorn in a background thread (:class:`ApiServer`), ``--api``.
"""

from __future__ import annotations

from agent.api.app import (
    API_SCHEMA_VERSION,
    STATIC_DIR,
    AgentState,
    create_app,
    network_geojson,
    openapi_document,
)

__all__ = [
    "API_SCHEMA_VERSION",
    "STATIC_DIR",
    "AgentState",
    "create_app",
    "network_geojson",
    "openapi_document",
]
