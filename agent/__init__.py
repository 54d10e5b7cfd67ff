"""The in-cab agent: GPS in, a cruising route or "follow the road" out, every decision logged.

Modules: :mod:`agent.gps` / :mod:`agent.nmea` (fix sources), :mod:`agent.planner` (the cruising
MDP), :mod:`agent.decide` (one tick, pure), :mod:`agent.runtime` (the loop, sync in the
background), :mod:`agent.triplog` (durable msgpack log), :mod:`agent.api` / :mod:`agent.server`
(local HTTP API and tablet page), :mod:`agent.replay`, :mod:`agent.export`, :mod:`agent.trial`.
Imports everything below it (tiles, models, safety, sync); nothing imports agent but tools.

The names below are imported on first use, so that ``import agent.planner`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "Agent": "agent.runtime",
    "AgentConfig": "agent.runtime",
    "SyncSettings": "agent.runtime",
    "RunSummary": "agent.runtime",
    "AgentError": "agent.errors",
    "ApiError": "agent.errors",
    "BundleLoadError": "agent.errors",
    "GpsError": "agent.errors",
    "ReplayError": "agent.errors",
    "TripLogError": "agent.errors",
    "AgentState": "agent.api",
    "create_app": "agent.api",
    "ApiConfig": "agent.server",
    "ApiServer": "agent.server",
    "Clock": "agent.clock",
    "ManualClock": "agent.clock",
    "SystemClock": "agent.clock",
    "Fix": "agent.gps",
    "GpsSource": "agent.gps",
    "TraceReplay": "agent.gps",
    "open_source": "agent.gps",
    "read_csv_trace": "agent.gps",
    "read_gpx_trace": "agent.gps",
    "NmeaSocketSource": "agent.nmea",
    "GpsdSource": "agent.gpsd",
    "LoadedBundle": "agent.bundle",
    "load_bundle": "agent.bundle",
    "TickInputs": "agent.decide",
    "TickResult": "agent.decide",
    "decide": "agent.decide",
    "Instruction": "agent.instruction",
    "Maneuver": "agent.instruction",
    "TripLog": "agent.triplog",
    "TripLogConfig": "agent.triplog",
    "read_records": "agent.triplog",
    "TickReplay": "agent.replay",
    "replay_log": "agent.replay",
    "export_geojson": "agent.export",
    "export_html": "agent.export",
    "report_trial": "agent.trial",
    "pull_logs": "agent.logs_pull",
    "Plan": "agent.planner",
    "PlannerError": "agent.planner",
    "PlannerParams": "agent.planner",
    "plan_cruise": "agent.planner",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agent' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
