"""NMEA 0183 input: ``RMC`` and ``GGA`` sentences from a file or a TCP stream, as :class:`Fix`.

A fix is emitted for every valid ``RMC`` (status ``A``): it carries the date, time, position,
speed over ground (knots -> m/s) and course. Accuracy comes from the most recent ``GGA`` of the
same second: HDOP times the receiver's UERE (see :data:`agent.gps.DEFAULT_UERE_M`). Sentences
with a wrong checksum, an unknown talker type, a void status or an over-long line are skipped
and counted; they never stop the stream.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from agent.clock import Clock
from agent.errors import GpsError
from agent.gps import DEFAULT_UERE_M, MAX_TRACE_BYTES, Fix, TraceReplay

log = logging.getLogger(__name__)

KNOT_MPS = 1852.0 / 3600.0
MAX_LINE_BYTES = 256  # NMEA 0183 allows 82 characters; leave room for proprietary talkers


def checksum(body: str) -> str:
    c = 0
    for ch in body.encode("ascii", errors="replace"):
        c ^= ch
    return f"{c:02X}"


def _split(line: str) -> list[str] | None:
    s = line.strip()
    if not s.startswith("$"):
        return None
    body, star, given = s[1:].partition("*")
    if star and given.strip().upper() != checksum(body):
        return None
    return body.split(",")


def _coord(value: str, hemi: str, degree_digits: int) -> float:
    if not value:
        raise ValueError("empty coordinate")
    deg = float(value[:degree_digits])
    minutes = float(value[degree_digits:])
    v = deg + minutes / 60.0
    if hemi in ("S", "W"):
        v = -v
    elif hemi not in ("N", "E"):
        raise ValueError(f"bad hemisphere {hemi!r}")
    return v


def _seconds_of_day(hhmmss: str) -> float:
    return int(hhmmss[0:2]) * 3600 + int(hhmmss[2:4]) * 60 + float(hhmmss[4:])


@dataclass
class NmeaDecoder:
    """Stateful decoder: :meth:`feed` one line, get a :class:`Fix` for each valid RMC."""

    uere_m: float = DEFAULT_UERE_M
    skipped: int = 0
    _hdop: dict[float, float] = field(default_factory=dict)

    def feed(self, line: str) -> Fix | None:
        fields = _split(line)
        if fields is None or not fields[0]:
            if line.strip():
                self.skipped += 1
            return None
        kind = fields[0][2:]
        try:
            if kind == "GGA" and len(fields) >= 9:
                if fields[1] and fields[8]:
                    self._hdop = {_seconds_of_day(fields[1]): float(fields[8])}
                return None
            if kind == "RMC" and len(fields) >= 10:
                return self._rmc(fields)
        except (ValueError, IndexError):
            pass
        self.skipped += 1
        return None

    def _rmc(self, f: list[str]) -> Fix | None:
        if f[2] != "A":
            self.skipped += 1
            return None
        sod = _seconds_of_day(f[1])
        date = f[9]
        day = datetime(2000 + int(date[4:6]), int(date[2:4]), int(date[0:2]), tzinfo=UTC)
        t = day.timestamp() + sod
        lat = _coord(f[3], f[4], 2)
        lon = _coord(f[5], f[6], 3)
        speed = float(f[7]) * KNOT_MPS if f[7] else None
        course = float(f[8]) if f[8] else None
        hdop = self._hdop.get(sod)
        if not (math.isfinite(lat) and math.isfinite(lon)):
            raise ValueError("non-finite position")
        return Fix(t, lon, lat, course, speed, None if hdop is None else hdop * self.uere_m)


def decode_lines(lines: Iterable[str], uere_m: float = DEFAULT_UERE_M) -> Iterator[Fix]:
    dec = NmeaDecoder(uere_m)
    for line in lines:
        fix = dec.feed(line)
        if fix is not None:
            yield fix
    if dec.skipped:
        log.info("NMEA: %d sentence(s) skipped (checksum, void or unsupported)", dec.skipped)


def _ddmm(value: float, degree_digits: int) -> str:
    a = abs(value)
    deg = int(a)
    minutes = (a - deg) * 60.0
    return f"{deg:0{degree_digits}d}{minutes:07.4f}"


def format_sentences(fix: Fix, uere_m: float = DEFAULT_UERE_M) -> list[str]:
    """``GGA`` and ``RMC`` sentences for a fix (what a receiver would send), with checksums."""
    dt = datetime.fromtimestamp(fix.time_s, tz=UTC)
    hms = dt.strftime("%H%M%S") + f".{dt.microsecond // 10000:02d}"
    lat = _ddmm(fix.lat, 2)
    lon = _ddmm(fix.lon, 3)
    ns = "N" if fix.lat >= 0 else "S"
    ew = "E" if fix.lon >= 0 else "W"
    hdop = "" if fix.accuracy_m is None else f"{fix.accuracy_m / uere_m:.1f}"
    gga = f"GPGGA,{hms},{lat},{ns},{lon},{ew},1,08,{hdop},10.0,M,-34.0,M,,"
    speed = "" if fix.speed_mps is None else f"{fix.speed_mps / KNOT_MPS:.2f}"
    course = "" if fix.heading_deg is None else f"{fix.heading_deg:.1f}"
    rmc = f"GPRMC,{hms},A,{lat},{ns},{lon},{ew},{speed},{course},{dt.strftime('%d%m%y')},,,A"
    return [f"${s}*{checksum(s)}" for s in (gga, rmc)]


class NmeaFileSource(TraceReplay):
    """A recorded NMEA log, replayed at ``speed`` times the pace of its own timestamps."""

    def __init__(
        self, path: Path, clock: Clock, speed: float = 1.0, max_bytes: int = MAX_TRACE_BYTES
    ) -> None:
        try:
            if path.stat().st_size > max_bytes:
                raise GpsError(f"NMEA log {path} is above the {max_bytes}-byte limit")
            with open(path, encoding="ascii", errors="replace") as fh:
                fixes = list(decode_lines(line[:MAX_LINE_BYTES] for line in fh))
        except OSError as e:
            raise GpsError(f"cannot read NMEA log {path}: {e}") from e
        if not fixes:
            raise GpsError(f"NMEA log {path} has no valid RMC sentence")
        super().__init__(fixes, clock, speed, description=f"NMEA log {path.name}")


class NmeaSocketSource:
    """A live NMEA stream over TCP (gpsd's raw port, a GPS-over-TCP bridge).

    Yields a :class:`Fix` per valid RMC, and ``None`` after every ``poll_s`` without one; when
    the connection drops it reconnects every ``reconnect_s`` (yielding ``None`` meanwhile)
    until the clock is stopped. Only the first connection must succeed.
    """

    def __init__(
        self,
        host: str,
        port: int,
        clock: Clock,
        connect_timeout_s: float = 5.0,
        poll_s: float = 1.0,
        reconnect_s: float = 2.0,
        uere_m: float = DEFAULT_UERE_M,
    ) -> None:
        self.description = f"NMEA tcp://{host}:{port}"
        self._addr = (host, port)
        self._clock = clock
        self._connect_timeout_s = connect_timeout_s
        self._poll_s = poll_s
        self._reconnect_s = reconnect_s
        self._decoder = NmeaDecoder(uere_m)
        self.reconnects = 0
        self._sock: socket.socket | None = self._connect()
        if self._sock is None:
            raise GpsError(f"cannot connect to {self.description}")

    def _connect(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(self._addr, timeout=self._connect_timeout_s)
        except OSError as e:
            log.warning("%s: %s", self.description, e)
            return None
        sock.settimeout(self._poll_s)
        return sock

    def now(self) -> float:
        return self._clock.now()

    def fixes(self) -> Iterator[Fix | None]:
        buf = b""
        while not self._clock.stopped:
            if self._sock is None:
                yield None
                if not self._clock.sleep(self._reconnect_s):
                    return
                self._sock = self._connect()
                self.reconnects += self._sock is not None
                buf = b""
                continue
            try:
                chunk = self._sock.recv(4096)
            except TimeoutError:
                yield None
                continue
            except OSError as e:
                chunk = b""
                log.warning("%s: %s", self.description, e)
            if not chunk:  # closed by the other side: reconnect
                self._drop()
                continue
            buf += chunk
            *lines, buf = buf.split(b"\n")
            if len(buf) > MAX_LINE_BYTES:
                log.warning("%s: dropping an over-long line", self.description)
                buf = b""
            for raw in lines:
                if len(raw) > MAX_LINE_BYTES:
                    continue
                fix = self._decoder.feed(raw.decode("ascii", errors="replace"))
                if fix is not None:
                    yield fix

    def _drop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def close(self) -> None:
        self._drop()
