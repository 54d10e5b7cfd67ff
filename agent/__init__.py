"""The in-cab agent: GPS in, a cruising route or "follow the road" out, every decision logged.

Start at :mod:`agent.decide`: one tick, pure (fix -> match -> plan -> safety -> instruction).
Around it:

* :mod:`agent.gps` (sub-package): fix sources (CSV/GPX traces, NMEA files and streams, gpsd);
* :mod:`agent.planner` (sub-package): the cruising MDP, its value iteration (``core``), the
  route read-out and its directions;
* :mod:`agent.bundle`: a bundle opened for driving; :mod:`agent.instruction`: what the driver
  sees; :mod:`agent.triplog`: the durable msgpack trip log;
* :mod:`agent.runtime`: the loop (ticks, the trip log's outbox feed, sync in the background);
* :mod:`agent.api` (sub-package): the local HTTP API, its server and the tablet page.

The field engineer's tools (replay, export, trial report, shifts, logs pull, demo) are in
``tools/field``. Imports everything below it (tiles, models, safety, sync); nothing imports
agent but tools.

The names below are imported on first use, so that ``import agent.planner`` stays light.
"""

from __future__ import annotations

from typing import Any

from tiles._lazy import lazy_attribute

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
    "ApiConfig": "agent.api.server",
    "ApiServer": "agent.api.server",
    "Clock": "agent.clock",
    "ManualClock": "agent.clock",
    "SystemClock": "agent.clock",
    "Fix": "agent.gps",
    "GpsSource": "agent.gps",
    "TraceReplay": "agent.gps",
    "open_source": "agent.gps",
    "read_csv_trace": "agent.gps",
    "read_gpx_trace": "agent.gps",
    "NmeaSocketSource": "agent.gps.nmea",
    "GpsdSource": "agent.gps.gpsd",
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
    "Plan": "agent.planner",
    "PlannerError": "agent.planner",
    "PlannerParams": "agent.planner",
    "plan_cruise": "agent.planner",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, globals(), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
