"""A gpsd client: fixes from gpsd's JSON reports (``--gps gpsd://HOST:PORT``).

On a Linux in-vehicle computer gpsd usually owns the receiver and shares it. The source sends
``?WATCH={"enable":true,"json":true}`` on every connection and turns each ``TPV`` report with
``mode`` 2 or 3 (2D/3D fix) and a ``time``, ``lat`` and ``lon`` into a :class:`Fix`: speed
(``speed``, m/s) and course (``track``, degrees true) when present; accuracy from ``eph``, else
``epx``/``epy``, else none. gpsd states its error estimates at 95 % confidence (``epx``/``epy`` per
axis; ``eph`` horizontal, "certainty unknown"), while nagashi's accuracy is a one-sigma
horizontal figure (``sqrt(sigma_lat**2 + sigma_lon**2)``, as from GST or HDOP x UERE), so both
are scaled to it: ``sqrt(epx**2 + epy**2) / 1.96`` and, for a circular error, ``eph / 1.73``
(the 95 % radius of a circular normal is 2.45 sigma; sqrt(2) sigma / 2.45 sigma = 1 / 1.73).
gpsd derives them from the DOPs with a conservative UERE of its own, so they stay somewhat larger
than nagashi's HDOP x UERE for the same receiver (measured: 7.7 m against 3.5 m at HDOP 0.7).
A TPV without a fix yields ``None`` (no fix), as does every ``poll_s`` of silence; the
connection is re-opened like the TCP NMEA source's.
"""

from __future__ import annotations

import json
import logging
import math
import socket
from collections.abc import Iterator
from typing import Any

from agent.clock import Clock
from agent.gps.stream import LineStreamSource
from agent.gps.trace import Fix, parse_time

log = logging.getLogger(__name__)

DEFAULT_PORT = 2947
WATCH = b'?WATCH={"enable":true,"json":true}\n'
MAX_REPORT_BYTES = 64 * 1024  # a SKY report lists every satellite


def _num(report: dict[str, Any], key: str) -> float | None:
    v = report.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def tpv_fix(report: dict[str, Any]) -> Fix | None:
    """The fix of one gpsd ``TPV`` report, ``None`` when it has none (mode < 2, no time)."""
    mode = report.get("mode")
    if not isinstance(mode, int) or mode < 2:
        return None
    lat, lon, t = _num(report, "lat"), _num(report, "lon"), report.get("time")
    if lat is None or lon is None or not isinstance(t, str):
        return None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None
    try:
        time_s = parse_time(t)
    except ValueError:
        return None
    acc = None
    eph = _num(report, "eph")
    epx, epy = _num(report, "epx"), _num(report, "epy")
    if eph is not None:
        acc = eph / EPH95_PER_SIGMA
    elif epx is not None and epy is not None:
        acc = math.hypot(epx, epy) / EP_AXIS95_PER_SIGMA
    return Fix(time_s, lon, lat, _num(report, "track"), _num(report, "speed"), acc)


#: gpsd's 95 % estimates over nagashi's one-sigma horizontal accuracy (module docstring)
EPH95_PER_SIGMA = 2.4477 / math.sqrt(2.0)  # 1.73
EP_AXIS95_PER_SIGMA = 1.96


class GpsdSource(LineStreamSource):
    """Fixes from a gpsd daemon's JSON stream over TCP (see the module docstring)."""

    max_line_bytes = MAX_REPORT_BYTES

    def __init__(
        self,
        host: str,
        port: int,
        clock: Clock,
        connect_timeout_s: float = 5.0,
        poll_s: float = 1.0,
        reconnect_s: float = 2.0,
    ) -> None:
        self.reports = 0  # TPV reports read
        self.malformed = 0  # lines that were not JSON objects
        super().__init__(
            f"gpsd://{host}:{port}", host, port, clock, connect_timeout_s, poll_s, reconnect_s
        )

    def _on_connect(self, sock: socket.socket) -> None:
        sock.sendall(WATCH)

    def _on_line(self, line: str) -> Iterator[Fix | None]:
        line = line.strip()
        if not line:
            return
        try:
            report = json.loads(line)
        except ValueError:
            self.malformed += 1
            return
        if not isinstance(report, dict):
            self.malformed += 1
            return
        if report.get("class") == "TPV":
            self.reports += 1
            yield tpv_fix(report)
