"""NMEA 0183 input: sentences from a file or a TCP stream, assembled per epoch into :class:`Fix`.

A receiver reports one position *epoch* (one solution) in several sentences that carry the same
UTC time stamp, in an order of its own: u-blox sends RMC, VTG, GGA, GSA, GSV, GLL; SiRF and
MediaTek send GGA, GSA, RMC; Septentrio starts with GST. The decoder collects every sentence of
one time stamp (``RMC``, ``GGA``, ``GST``, ``ZDA``, and the untimed ``GSA`` and ``VTG`` that
follow them) from the talkers GP, GN, GL, GA, GB/BD and GQ/QZ, and emits one fix when the epoch
ends: when a sentence with another time stamp arrives, at the end of the input, or (live
streams) after a short silence, see :class:`NmeaSocketSource`.

A fix carries:

* time: the epoch's time of day on the date of its RMC or ZDA, else on the last date seen
  (advanced by a day when the time of day wraps past midnight); a GGA-only receiver that never
  sent a date gives fixes only where the decoder is told today's date (``today``, the live
  stream's wall clock); otherwise its epochs are dropped and counted in ``undated``;
* position: RMC (status A), else GGA (quality > 0);
* speed and course: RMC, else VTG;
* accuracy (metres, the 68 % radius the safety gate expects): from GST's 1-sigma latitude and
  longitude errors as ``sqrt(sd_lat**2 + sd_lon**2)`` (the horizontal RMS error) when the epoch
  has a GST with both; else HDOP x ``uere_m`` with HDOP from GGA, else from GSA.

Checksums follow gpsd: a sentence with ``*hh`` must match it (any case) or it is rejected and
counted in ``bad_checksum``; a sentence without ``*`` is accepted. Void sentences (RMC status
V, GGA quality 0, GSA fix type 1, VTG mode N) are counted in ``void``. Every line that gives
nothing (those, unknown sentences or talkers, malformed fields) counts in ``skipped``; none
stops the stream.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from agent.clock import Clock
from agent.errors import GpsError
from agent.gps.stream import MAX_LINE_BYTES, LineStreamSource
from agent.gps.trace import DEFAULT_UERE_M, MAX_TRACE_BYTES, Fix, TraceReplay

log = logging.getLogger(__name__)

KNOT_MPS = 1852.0 / 3600.0
#: A live epoch is emitted after this long without a new sentence of it (seconds).
DEFAULT_EPOCH_TIMEOUT_S = 0.3
TALKERS = frozenset({"GP", "GN", "GL", "GA", "GB", "BD", "GQ", "QZ"})
HEX = frozenset("0123456789ABCDEFabcdef")


def checksum(body: str) -> str:
    c = 0
    for ch in body.encode("ascii", errors="replace"):
        c ^= ch
    return f"{c:02X}"


class _BadChecksum(Exception):
    pass


def _split(line: str) -> list[str] | None:
    """Fields of a ``$`` sentence, ``None`` if it is not one; raises on a wrong checksum."""
    s = line.strip()
    if not s.startswith("$"):
        return None
    body, star, given = s[1:].partition("*")
    if star:
        given = given.strip()
        if len(given) != 2 or not set(given) <= HEX or given.upper() != checksum(body):
            raise _BadChecksum(line)
    return body.split(",")


def _coord(value: str, hemi: str, degree_digits: int) -> float:
    """``ddmm.mmmm`` (latitude, ``degree_digits`` 2) or ``dddmm.mmmm`` (longitude, 3): the
    minutes are the two digits before the point and the fraction, the degrees what precedes
    them (some receivers drop leading zeros); out of range (above 90 or 180) is an error."""
    whole, _, frac = value.partition(".")
    if len(whole) < 3 or len(whole) > degree_digits + 2 or not whole.isdigit():
        raise ValueError(f"bad coordinate {value!r}")
    if frac and not frac.isdigit():
        raise ValueError(f"bad coordinate {value!r}")
    deg = int(whole[:-2])
    minutes = float(whole[-2:] + ("." + frac if frac else ""))
    if not (0.0 <= minutes < 60.0):
        raise ValueError(f"bad minutes {value!r}")
    v = deg + minutes / 60.0
    if v > (90.0 if degree_digits == 2 else 180.0):
        raise ValueError(f"coordinate out of range {value!r}")
    if hemi in ("S", "W"):
        v = -v
    elif hemi not in ("N", "E"):
        raise ValueError(f"bad hemisphere {hemi!r}")
    return v


def _seconds_of_day(hhmmss: str) -> float:
    if len(hhmmss) < 6 or not hhmmss[:6].isdigit():
        raise ValueError(f"bad time {hhmmss!r}")
    h, m, s = int(hhmmss[0:2]), int(hhmmss[2:4]), float(hhmmss[4:])
    if h > 23 or m > 59 or not (0.0 <= s < 61.0):
        raise ValueError(f"bad time {hhmmss!r}")
    return round(h * 3600 + m * 60 + s, 3)


def _opt(value: str) -> float | None:
    if not value:
        return None
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"non-finite {value!r}")
    return v


@dataclass
class _Epoch:
    sod: float | None = None  # seconds of day of the epoch's time stamp
    day: date | None = None  # from its RMC or ZDA
    rmc_pos: tuple[float, float] | None = None  # lat, lon
    gga_pos: tuple[float, float] | None = None
    speed_mps: float | None = None  # RMC
    course: float | None = None
    vtg_speed_mps: float | None = None
    vtg_course: float | None = None
    gga_hdop: float | None = None
    gsa_hdop: float | None = None
    gst_m: float | None = None
    useful: bool = False  # any sentence fed into it

    def accuracy(self, uere_m: float) -> float | None:
        if self.gst_m is not None:
            return self.gst_m
        hdop = self.gga_hdop if self.gga_hdop is not None else self.gsa_hdop
        return None if hdop is None else hdop * uere_m


@dataclass
class NmeaDecoder:
    """Stateful decoder: :meth:`feed` one line at a time, :meth:`flush` at the end.

    :meth:`feed` returns the fix of the *previous* epoch when the line starts a new one;
    :meth:`flush` ends the open epoch (end of input, or a live stream gone quiet). ``now``
    (UNIX seconds, the wall clock of a live stream) dates the epochs of a receiver that never
    sent a date: the day that puts the fix nearest to ``now``.
    """

    uere_m: float = DEFAULT_UERE_M
    now: Callable[[], float] | None = None
    skipped: int = 0
    bad_checksum: int = 0
    void: int = 0
    undated: int = 0
    _epoch: _Epoch | None = field(default=None, repr=False)
    _last_day: date | None = field(default=None, repr=False)
    _last_sod: float = field(default=0.0, repr=False)

    @property
    def pending(self) -> bool:
        """An epoch with a time stamp is open (a fix may come out of :meth:`flush`)."""
        return self._epoch is not None and self._epoch.sod is not None

    def feed(self, line: str) -> Fix | None:
        """Feed one line; ``None`` or the fix of the epoch this line ended."""
        try:
            fields = _split(line)
        except _BadChecksum:
            self.bad_checksum += 1
            self.skipped += 1
            return None
        if fields is None or len(fields[0]) != 5 or fields[0][:2] not in TALKERS:
            if line.strip():
                self.skipped += 1
            return None
        parse = _PARSERS.get(fields[0][2:])
        if parse is None:
            self.skipped += 1
            return None
        try:
            sod, apply = parse(fields)
        except _Void:
            self.void += 1
            self.skipped += 1
            return None
        except (ValueError, IndexError, OverflowError):
            self.skipped += 1
            return None
        out = None
        if sod is not None:
            if self._epoch is not None and self._epoch.sod not in (None, sod):
                out = self._close()
            if self._epoch is None:
                self._epoch = _Epoch()
            self._epoch.sod = sod
        elif self._epoch is None:  # an untimed sentence belongs to the last time stamp
            self.skipped += 1
            return None
        apply(self._epoch)
        self._epoch.useful = True
        return out

    def flush(self) -> Fix | None:
        """End the open epoch: its fix, or ``None`` when it has no position."""
        return self._close()

    def _close(self) -> Fix | None:
        ep, self._epoch = self._epoch, None
        if ep is None or ep.sod is None:
            return None
        day = self._date_of(ep)
        pos = ep.rmc_pos or ep.gga_pos
        if pos is None:
            return None
        if day is None:
            self.undated += 1
            return None
        t = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() + ep.sod
        speed = ep.speed_mps if ep.speed_mps is not None else ep.vtg_speed_mps
        course = ep.course if ep.course is not None else ep.vtg_course
        lat, lon = pos
        return Fix(t, lon, lat, course, speed, ep.accuracy(self.uere_m))

    def _date_of(self, ep: _Epoch) -> date | None:
        assert ep.sod is not None
        day = ep.day
        if day is None and self._last_day is not None:
            day = self._last_day
            if ep.sod + 43200.0 < self._last_sod:  # past midnight since the last dated epoch
                day += timedelta(days=1)
        if day is None and self.now is not None:
            now = self.now()
            today = datetime.fromtimestamp(now, tz=UTC).date()
            candidates = [today + timedelta(days=d) for d in (-1, 0, 1)]
            day = min(
                candidates,
                key=lambda d: abs(
                    datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() + (ep.sod or 0.0) - now
                ),
            )
            return day  # the wall clock's date is not remembered as the receiver's
        if day is not None:
            self._last_day, self._last_sod = day, ep.sod
        return day


class _Void(Exception):
    """A well-formed sentence that says the receiver has no fix."""


_Apply = Callable[[_Epoch], None]


def _rmc(f: list[str]) -> tuple[float | None, _Apply]:
    if len(f) < 10:
        raise ValueError("short RMC")
    sod = _seconds_of_day(f[1])
    if f[2] != "A":
        raise _Void
    lat, lon = _coord(f[3], f[4], 2), _coord(f[5], f[6], 3)
    speed = _opt(f[7])
    course = _opt(f[8])
    d = f[9]
    day = date(2000 + int(d[4:6]), int(d[2:4]), int(d[0:2])) if len(d) == 6 else None

    def apply(ep: _Epoch) -> None:
        ep.rmc_pos = (lat, lon)
        ep.speed_mps = None if speed is None else speed * KNOT_MPS
        ep.course = course
        if day is not None:
            ep.day = day

    return sod, apply


def _gga(f: list[str]) -> tuple[float | None, _Apply]:
    if len(f) < 9:
        raise ValueError("short GGA")
    sod = _seconds_of_day(f[1])
    # 0 no fix, 7 manual input, 8 simulator: not a position of the cab
    if f[6] in ("", "0", "7", "8"):
        raise _Void
    lat, lon = _coord(f[2], f[3], 2), _coord(f[4], f[5], 3)
    hdop = _opt(f[8])

    def apply(ep: _Epoch) -> None:
        if ep.gga_pos is None:  # GP and GL GGA of one epoch: the first
            ep.gga_pos = (lat, lon)
            ep.gga_hdop = hdop

    return sod, apply


def _gsa(f: list[str]) -> tuple[float | None, _Apply]:
    if len(f) < 17:
        raise ValueError("short GSA")
    if f[2] in ("", "1"):
        raise _Void
    hdop = _opt(f[16].split("*")[0])

    def apply(ep: _Epoch) -> None:
        if hdop is not None:
            ep.gsa_hdop = hdop

    return None, apply


def _gst(f: list[str]) -> tuple[float | None, _Apply]:
    if len(f) < 8:
        raise ValueError("short GST")
    sod = _seconds_of_day(f[1])
    sd_lat, sd_lon = _opt(f[6]), _opt(f[7])
    err = None if sd_lat is None or sd_lon is None else math.hypot(sd_lat, sd_lon)

    def apply(ep: _Epoch) -> None:
        if err is not None:
            ep.gst_m = err

    return sod, apply


def _zda(f: list[str]) -> tuple[float | None, _Apply]:
    if len(f) < 5:
        raise ValueError("short ZDA")
    sod = _seconds_of_day(f[1])
    day = date(int(f[4]), int(f[3]), int(f[2])) if f[2] and f[3] and f[4] else None

    def apply(ep: _Epoch) -> None:
        if day is not None:
            ep.day = day

    return sod, apply


def _vtg(f: list[str]) -> tuple[float | None, _Apply]:
    if len(f) >= 9 and f[2] == "T":  # NMEA 2.3+: course,T,course,M,knots,N,kph,K[,mode]
        if len(f) >= 10 and f[9][:1] == "N":
            raise _Void
        course, knots = _opt(f[1]), _opt(f[5])
    elif len(f) >= 5:  # NMEA 2.0: course,course,knots,kph
        course, knots = _opt(f[1]), _opt(f[3])
    else:
        raise ValueError("short VTG")

    def apply(ep: _Epoch) -> None:
        ep.vtg_course = course
        ep.vtg_speed_mps = None if knots is None else knots * KNOT_MPS

    return None, apply


_PARSERS: dict[str, Callable[[list[str]], tuple[float | None, _Apply]]] = {
    "RMC": _rmc,
    "GGA": _gga,
    "GSA": _gsa,
    "GST": _gst,
    "ZDA": _zda,
    "VTG": _vtg,
}


def decode_lines(
    lines: Iterable[str],
    uere_m: float = DEFAULT_UERE_M,
    now: Callable[[], float] | None = None,
) -> Iterator[Fix]:
    """One fix per epoch of ``lines`` (the last epoch ends with the input)."""
    dec = NmeaDecoder(uere_m, now)
    for line in lines:
        fix = dec.feed(line)
        if fix is not None:
            yield fix
    fix = dec.flush()
    if fix is not None:
        yield fix
    _log_counts(dec, "NMEA")


def _log_counts(dec: NmeaDecoder, what: str) -> None:
    if dec.skipped or dec.undated:
        log.info(
            "%s: %d line(s) skipped (%d bad checksum, %d void, the rest unsupported or "
            "malformed), %d undated epoch(s) dropped",
            what,
            dec.skipped,
            dec.bad_checksum,
            dec.void,
            dec.undated,
        )


def _ddmm(value: float, degree_digits: int) -> str:
    """``ddmm.mmmm`` / ``dddmm.mmmm``, the minutes rounded to 4 decimals; a value whose minutes
    round up to 60 carries into the degrees (1.99999999 is ``0200.0000``, not ``0160.0000``)."""
    a = abs(value)
    deg = int(a)
    minutes = round((a - deg) * 60.0, 4)
    if minutes >= 60.0:
        deg, minutes = deg + 1, 0.0
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
            raise GpsError(f"NMEA log {path} has no valid fix (no RMC or GGA with a fix)")
        super().__init__(fixes, clock, speed, description=f"NMEA log {path.name}")


class NmeaSocketSource(LineStreamSource):
    """A live NMEA stream over TCP (gpsd's raw port, a GPS-over-TCP bridge).

    Yields a :class:`Fix` per epoch: when the next time stamp arrives, when the connection
    ends, or after ``epoch_timeout_s`` without a sentence of the open epoch, so a fix is never
    held back by more than that (default :data:`DEFAULT_EPOCH_TIMEOUT_S`; keep it below the
    receiver's interval, and above the time it takes to send one epoch). ``None`` after every
    ``poll_s`` without a fix; reconnects like :class:`LineStreamSource`. Epochs of a receiver
    that never sends a date are dated by the clock's day.
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
        epoch_timeout_s: float = DEFAULT_EPOCH_TIMEOUT_S,
    ) -> None:
        if not (epoch_timeout_s > 0 and math.isfinite(epoch_timeout_s)):
            raise GpsError(f"epoch timeout must be a positive number, got {epoch_timeout_s}")
        self._decoder = NmeaDecoder(uere_m, now=clock.now)
        self._epoch_timeout_s = epoch_timeout_s
        self._deadline = 0.0
        super().__init__(
            f"NMEA tcp://{host}:{port}", host, port, clock, connect_timeout_s, poll_s, reconnect_s
        )

    @property
    def decoder(self) -> NmeaDecoder:
        return self._decoder

    def _read_timeout(self) -> float:
        if self._decoder.pending:
            return self._deadline - self._clock.monotonic()
        return self._poll_s

    def _on_line(self, line: str) -> Iterator[Fix | None]:
        before = self._decoder.skipped
        fix = self._decoder.feed(line)
        if fix is not None:
            yield fix
        if self._decoder.skipped == before:  # a sentence of the open epoch: wait for more
            self._deadline = self._clock.monotonic() + self._epoch_timeout_s
        elif self._decoder.pending and self._clock.monotonic() >= self._deadline:
            yield from self._flush()

    def _flush(self) -> Iterator[Fix | None]:
        fix = self._decoder.flush()
        if fix is not None:
            yield fix

    def _on_silence(self) -> Iterator[Fix | None]:
        if self._decoder.pending:
            yield from self._flush()
        else:
            yield None

    def _on_end(self) -> Iterator[Fix | None]:
        yield from self._flush()
