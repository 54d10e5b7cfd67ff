"""Recorded GPS traces (CSV, GPX) and their replay on the trace's own clock.

A replay runs on the *trace's* clock (the recording's time, advanced ``speed`` times faster
than real time), so a recorded evening drive is planned with that evening's demand however
fast it is replayed (:class:`TraceReplay`).

Trace formats:

* CSV with a header ``time,lon,lat,heading,speed[,accuracy]``: ``time`` as ISO 8601 (with an
  offset or ``Z``) or UNIX seconds, heading in degrees clockwise from north (empty when
  unknown), speed in metres per second, accuracy in metres.
* GPX 1.1 track points with ``<time>``; speed and course from the Garmin TrackPointExtension v2
  (``gpxtpx:speed`` m/s, ``gpxtpx:course`` degrees) or GPX 1.0 ``<speed>``/``<course>``;
  accuracy from ``<hdop>`` times the receiver's UERE. Missing headings and speeds are derived
  from consecutive points.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from agent.clock import Clock
from agent.errors import GpsError
from safety import Fix
from tiles.fileio import atomic_write_bytes

__all__ = ["DEFAULT_UERE_M", "MAX_TRACE_BYTES", "Fix", "TraceReplay"]

log = logging.getLogger(__name__)

GPX_NS = "http://www.topografix.com/GPX/1/1"
GPX10_NS = "http://www.topografix.com/GPX/1/0"
TPX_NS = "http://www.garmin.com/xmlschemas/TrackPointExtension/v2"
CSV_HEADER = ("time", "lon", "lat", "heading", "speed", "accuracy")
MAX_TRACE_BYTES = 64 * 1024 * 1024
#: The times a trace may hold, UNIX seconds: 1970-01-01 to 2100-01-01 UTC. Anything else
#: (``inf``, ``1e300``, NaN, a year-1 date) is a broken file, not a drive.
MIN_TRACE_TIME_S = 0.0
MAX_TRACE_TIME_S = 4_102_444_800.0
#: User equivalent range error of a consumer GNSS receiver, metres: accuracy = HDOP x UERE.
DEFAULT_UERE_M = 5.0


# --------------------------------------------------------------------------- parsing helpers


def check_time(t: float) -> float:
    """``t`` if it is a finite UNIX time between 1970 and 2100, else :class:`ValueError`."""
    if not (MIN_TRACE_TIME_S <= t < MAX_TRACE_TIME_S):  # also false for NaN
        raise ValueError(f"time {t!r} is not a UNIX time between 1970 and 2100")
    return t


def parse_time(text: str) -> float:
    """ISO 8601 (``2015-06-02T22:30:00Z``, ``...+00:00``) or UNIX seconds -> UNIX seconds.

    :class:`ValueError` for anything else, and for a time outside 1970-2100 (see
    :func:`check_time`)."""
    s = text.strip()
    if not s:
        raise ValueError("empty time")
    try:
        seconds = float(s)
    except ValueError:
        pass
    else:
        return check_time(seconds)
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        raise ValueError(f"time without a UTC offset: {text!r}")
    try:
        t = dt.timestamp()
    except OverflowError as e:  # year 1 with a positive offset, year 9999 with a negative one
        raise ValueError(f"time {text!r} is out of range") from e
    return check_time(t)


def _coordinates(lon: float, lat: float) -> tuple[float, float]:
    """``(lon, lat)`` if both are finite and on the globe, else :class:`ValueError`."""
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):  # also false for NaN
        raise ValueError(f"position ({lon!r}, {lat!r}) is not a longitude, latitude")
    return lon, lat


def format_time(t: float) -> str:
    """UNIX seconds -> ISO 8601 UTC with milliseconds and ``Z``."""
    dt = datetime.fromtimestamp(t, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _opt_float(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    v = float(text)
    return v if math.isfinite(v) else None


def _read_bounded(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise GpsError(f"trace {path} is {size} bytes, above the {max_bytes}-byte limit")
        with open(path, "rb") as fh:
            return fh.read(max_bytes + 1)
    except FileNotFoundError as e:
        raise GpsError(f"trace not found: {path}") from e
    except OSError as e:
        raise GpsError(f"cannot read trace {path}: {e}") from e


def _check(fixes: list[Fix], path: Path) -> list[Fix]:
    if not fixes:
        raise GpsError(f"trace {path} has no fixes")
    for a, b in itertools.pairwise(fixes):
        if b.time_s < a.time_s:
            raise GpsError(f"trace {path}: time goes backwards at {format_time(b.time_s)}")
    return fixes


def fill_motion(fixes: Sequence[Fix], min_speed_for_heading_mps: float = 1.0) -> list[Fix]:
    """Derive missing speed and heading from consecutive points (no heading when slow)."""
    from tiles.geo import bearing_deg, haversine_m

    out: list[Fix] = []
    for i, f in enumerate(fixes):
        heading, speed = f.heading_deg, f.speed_mps
        if (heading is None or speed is None) and len(fixes) > 1:
            a, b = (fixes[i - 1], f) if i > 0 else (f, fixes[1])
            dt = b.time_s - a.time_s
            d = float(haversine_m(a.lon, a.lat, b.lon, b.lat))
            if speed is None and dt > 0:
                speed = d / dt
            if heading is None and speed is not None and speed >= min_speed_for_heading_mps:
                heading = float(bearing_deg(a.lon, a.lat, b.lon, b.lat))
        out.append(Fix(f.time_s, f.lon, f.lat, heading, speed, f.accuracy_m))
    return out


# --------------------------------------------------------------------------- CSV


def read_csv_trace(path: str | os.PathLike[str], max_bytes: int = MAX_TRACE_BYTES) -> list[Fix]:
    """Fixes of a CSV trace (see module docstring), in file order."""
    p = Path(path)
    text = _read_bounded(p, max_bytes).decode("utf-8-sig", errors="replace")
    # newline="" semantics: the csv module itself splits rows, so that a bare CR inside a
    # field is reported (csv.Error) with its line instead of being taken for a line break
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        fieldnames = reader.fieldnames
    except csv.Error as e:
        raise GpsError(f"CSV trace {p} line 1: {e}") from e
    missing = {"time", "lon", "lat"} - set(fieldnames or ())
    if missing:
        raise GpsError(
            f"CSV trace {p} lacks column(s) {sorted(missing)}; header must be "
            "time,lon,lat,heading,speed[,accuracy]"
        )
    fixes: list[Fix] = []
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as e:
            raise GpsError(f"CSV trace {p} line {reader.line_num}: {e}") from e
        try:
            lon, lat = _coordinates(float(row["lon"]), float(row["lat"]))
            fixes.append(
                Fix(
                    time_s=parse_time(row["time"]),
                    lon=lon,
                    lat=lat,
                    heading_deg=_opt_float(row.get("heading")),
                    speed_mps=_opt_float(row.get("speed")),
                    accuracy_m=_opt_float(row.get("accuracy")),
                )
            )
        except (ValueError, TypeError, AttributeError) as e:
            raise GpsError(f"CSV trace {p} line {reader.line_num}: {e}") from e
    return _check(fixes, p)


def write_csv_trace(fixes: Iterable[Fix], path: str | os.PathLike[str]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for f in fixes:
        w.writerow(
            [
                format_time(f.time_s),
                f"{f.lon:.7f}",
                f"{f.lat:.7f}",
                "" if f.heading_deg is None else f"{f.heading_deg:.1f}",
                "" if f.speed_mps is None else f"{f.speed_mps:.2f}",
                "" if f.accuracy_m is None else f"{f.accuracy_m:.1f}",
            ]
        )
    return atomic_write_bytes(Path(path), buf.getvalue().encode())


# --------------------------------------------------------------------------- GPX


def read_gpx_trace(
    path: str | os.PathLike[str],
    max_bytes: int = MAX_TRACE_BYTES,
    uere_m: float = DEFAULT_UERE_M,
) -> list[Fix]:
    """Fixes of every track point of a GPX 1.0/1.1 file, in file order."""
    import xml.etree.ElementTree as ET  # GPX only: not loaded for a CSV trace or NMEA

    p = Path(path)
    data = _read_bounded(p, max_bytes)
    try:
        root = ET.fromstring(data)
    except (ET.ParseError, LookupError, ValueError) as e:  # LookupError: unknown encoding
        raise GpsError(f"GPX trace {p} is not valid XML: {e}") from e
    ns = GPX_NS if root.tag == f"{{{GPX_NS}}}gpx" else GPX10_NS
    if root.tag != f"{{{ns}}}gpx":
        raise GpsError(f"{p} is not a GPX file (root element {root.tag})")
    fixes: list[Fix] = []
    for i, pt in enumerate(root.iter(f"{{{ns}}}trkpt")):
        try:
            t = pt.findtext(f"{{{ns}}}time")
            if t is None:
                raise ValueError("track point without <time>")
            speed = _opt_float(pt.findtext(f".//{{{TPX_NS}}}speed"))
            course = _opt_float(pt.findtext(f".//{{{TPX_NS}}}course"))
            if speed is None:
                speed = _opt_float(pt.findtext(f"{{{ns}}}speed"))
            if course is None:
                course = _opt_float(pt.findtext(f"{{{ns}}}course"))
            hdop = _opt_float(pt.findtext(f"{{{ns}}}hdop"))
            lon, lat = _coordinates(float(pt.attrib["lon"]), float(pt.attrib["lat"]))
            fixes.append(
                Fix(
                    time_s=parse_time(t),
                    lon=lon,
                    lat=lat,
                    heading_deg=course,
                    speed_mps=speed,
                    accuracy_m=None if hdop is None else hdop * uere_m,
                )
            )
        except (KeyError, ValueError) as e:
            raise GpsError(f"GPX trace {p} track point {i}: {e}") from e
    return fill_motion(_check(fixes, p))


def write_gpx_trace(
    fixes: Iterable[Fix], path: str | os.PathLike[str], name: str, uere_m: float = DEFAULT_UERE_M
) -> Path:
    import xml.etree.ElementTree as ET

    ET.register_namespace("", GPX_NS)
    ET.register_namespace("gpxtpx", TPX_NS)
    root = ET.Element(f"{{{GPX_NS}}}gpx", {"version": "1.1", "creator": "nagashi"})
    trk = ET.SubElement(root, f"{{{GPX_NS}}}trk")
    ET.SubElement(trk, f"{{{GPX_NS}}}name").text = name
    seg = ET.SubElement(trk, f"{{{GPX_NS}}}trkseg")
    for f in fixes:
        pt = ET.SubElement(
            seg, f"{{{GPX_NS}}}trkpt", {"lat": f"{f.lat:.7f}", "lon": f"{f.lon:.7f}"}
        )
        ET.SubElement(pt, f"{{{GPX_NS}}}time").text = format_time(f.time_s)
        if f.accuracy_m is not None:
            ET.SubElement(pt, f"{{{GPX_NS}}}hdop").text = f"{f.accuracy_m / uere_m:.2f}"
        if f.speed_mps is not None or f.heading_deg is not None:
            ext = ET.SubElement(pt, f"{{{GPX_NS}}}extensions")
            tpx = ET.SubElement(ext, f"{{{TPX_NS}}}TrackPointExtension")
            if f.speed_mps is not None:
                ET.SubElement(tpx, f"{{{TPX_NS}}}speed").text = f"{f.speed_mps:.2f}"
            if f.heading_deg is not None:
                ET.SubElement(tpx, f"{{{TPX_NS}}}course").text = f"{f.heading_deg:.1f}"
    ET.indent(root)
    data = ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
    return atomic_write_bytes(Path(path), data)


# --------------------------------------------------------------------------- replay


class TraceReplay:
    """Replays recorded fixes at ``speed`` times real time on the trace's own clock.

    ``speed <= 0`` replays as fast as the consumer reads. :meth:`now` is the trace time that
    corresponds to the current moment of the replay.
    """

    def __init__(
        self, fixes: Sequence[Fix], clock: Clock, speed: float = 1.0, description: str = "trace"
    ) -> None:
        if not fixes:
            raise GpsError("a replay needs at least one fix")
        if not math.isfinite(speed):
            raise GpsError(f"replay speed must be finite, got {speed}")
        for i, f in enumerate(fixes):
            try:
                check_time(f.time_s)
            except ValueError as e:
                raise GpsError(f"{description}: fix {i}: {e}") from e
        self._fixes = list(fixes)
        self._clock = clock
        self.speed = float(speed)
        self.description = description
        self._t0 = self._fixes[0].time_s
        self._start_mono: float | None = None
        self._last_time = self._t0
        self._closed = False

    def now(self) -> float:
        if self.speed <= 0 or self._start_mono is None:
            return self._last_time
        return self._t0 + (self._clock.monotonic() - self._start_mono) * self.speed

    def fixes(self) -> Iterator[Fix | None]:
        self._start_mono = self._clock.monotonic()
        for f in self._fixes:
            if self._closed:
                return
            if self.speed > 0:
                due = self._start_mono + (f.time_s - self._t0) / self.speed
                if not self._clock.sleep(due - self._clock.monotonic()):
                    return
            self._last_time = f.time_s
            yield f

    def close(self) -> None:
        self._closed = True


def load_trace(path: str | os.PathLike[str]) -> list[Fix]:
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return read_csv_trace(p)
    if suffix == ".gpx":
        return read_gpx_trace(p)
    raise GpsError(f"unknown trace format {suffix!r} (expected .csv or .gpx): {p}")
