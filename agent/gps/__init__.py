"""GPS input: every source yields one type, :class:`Fix` (``safety.Fix``: the gate judges what
the receiver gave, unchanged), and tells the runtime what time it is (:meth:`GpsSource.now`): a
live receiver runs on the wall clock, a replay on the trace's clock.

* :mod:`agent.gps.trace`: recorded traces (CSV, GPX) and :class:`TraceReplay`;
* :mod:`agent.gps.nmea`: NMEA 0183, decoded per epoch, from a file or a TCP stream;
* :mod:`agent.gps.gpsd`: a gpsd daemon's JSON reports;
* :mod:`agent.gps.stream`: the reconnecting line stream both live sources share;
* :func:`open_source`: a source from a command-line spec (``--gps``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from agent.clock import Clock
from agent.errors import GpsError
from agent.gps.trace import (
    CSV_HEADER,
    DEFAULT_UERE_M,
    MAX_TRACE_BYTES,
    MAX_TRACE_TIME_S,
    MIN_TRACE_TIME_S,
    Fix,
    TraceReplay,
    check_time,
    fill_motion,
    format_time,
    load_trace,
    parse_time,
    read_csv_trace,
    read_gpx_trace,
    write_csv_trace,
    write_gpx_trace,
)

__all__ = [
    "CSV_HEADER",
    "DEFAULT_UERE_M",
    "MAX_TRACE_BYTES",
    "MAX_TRACE_TIME_S",
    "MIN_TRACE_TIME_S",
    "Fix",
    "GpsSource",
    "TraceReplay",
    "check_time",
    "fill_motion",
    "format_time",
    "load_trace",
    "open_source",
    "parse_time",
    "read_csv_trace",
    "read_gpx_trace",
    "write_csv_trace",
    "write_gpx_trace",
]


class GpsSource(Protocol):
    """Anything that yields fixes and knows the time they are to be judged at.

    A live source yields ``None`` when no fix came for a while (receiver silent, link down),
    so that the agent can judge its last fix as stale instead of showing an old instruction.
    """

    description: str

    def fixes(self) -> Iterator[Fix | None]: ...

    def now(self) -> float: ...

    def close(self) -> None: ...


def open_source(spec: str, clock: Clock, speed: float = 1.0) -> GpsSource:
    """A GPS source from a command-line spec.

    ``drive.csv`` / ``drive.gpx``: replay of a trace; ``drive.nmea`` (or ``.txt``/``.log``): a
    recorded NMEA stream, paced by its own timestamps; ``tcp://HOST:PORT``: a live NMEA stream;
    ``gpsd://HOST[:PORT]``: a gpsd daemon's JSON reports (port 2947 by default).
    """
    if spec.startswith("gpsd://"):
        from agent.gps.gpsd import DEFAULT_PORT, GpsdSource

        rest = spec.removeprefix("gpsd://").rstrip("/")
        host, colon, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
        if not host or (colon and not port.isdigit()) or "/" in host:
            raise GpsError(f"expected gpsd://HOST[:PORT], got {spec!r}")
        return GpsdSource(host, int(port) if port else DEFAULT_PORT, clock)

    if spec.startswith("tcp://"):
        host, _, port = spec.removeprefix("tcp://").rpartition(":")
        if not host or not port.isdigit():
            raise GpsError(f"expected tcp://HOST:PORT, got {spec!r}")
        from agent.gps.nmea import NmeaSocketSource

        return NmeaSocketSource(host, int(port), clock)
    p = Path(spec)
    if p.suffix.lower() in {".nmea", ".txt", ".log"}:
        from agent.gps.nmea import NmeaFileSource

        return NmeaFileSource(p, clock, speed)
    return TraceReplay(load_trace(p), clock, speed, description=f"replay of {p.name}")
