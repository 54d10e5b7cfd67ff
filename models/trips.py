"""Reading NYC trip files (TLC yellow-cab trips, Uber app pickups) into numpy arrays, dropping
bad rows by reason.

Three formats are understood (all present in ``data/trips``), recognised by their header:

* the TLC 2015 schema, with a header: ``tpep_pickup_datetime``, ``tpep_dropoff_datetime``,
  ``pickup_longitude/latitude``, ``dropoff_longitude/latitude``, ``trip_distance`` (miles),
  ``fare_amount``, ...;
* the headerless 8-column sample (``fare_amount, pickup_datetime, pickup_lon, pickup_lat,
  dropoff_lon, dropoff_lat, passenger_count, key``) whose datetimes are local New York time
  despite their "UTC" label;
* the Uber 2014 pickups released to FiveThirtyEight (``Date/Time, Lat, Lon, Base``, times
  ``M/D/YYYY H:MM:SS`` local New York time): pickups only -- no drop-off, fare or trip time.

A file may be a zip holding exactly one CSV (``__MACOSX/`` entries and dot-files are ignored);
it is streamed, never unpacked, and bounded by ``MAX_TRIP_FILE_BYTES`` uncompressed.

Times stay local wall-clock time (minute of week, day type) because demand follows the city's
clock. Exact duplicate rows (every field equal to an earlier row of the same file) are read once
and counted (``Trips.duplicates``). A row is dropped, and counted under its reason, when its
pickup time or coordinates do not parse, are missing (blank or 0,0), or lie outside the given
bounding box. A row whose fare or drop-off is unusable keeps its pickup (demand) but not its
fare/drop-off (NaN).
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import datetime as dt
import io
import logging
import os
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import numpy.typing as npt

from models.errors import DemandDataError

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

MAX_TRIP_FILE_BYTES = 512 * 1024 * 1024
#: Consecutive pickups closer than this belong to one covered window (see :func:`coverage`).
WINDOW_GAP_S = 600.0
MILE_M = 1609.344
#: Fares outside this range (currency units) are not used for fare statistics.
FARE_RANGE = (2.5, 500.0)
#: Trip durations outside this range (seconds) are not used for duration statistics.
DURATION_RANGE_S = (30.0, 4 * 3600.0)

_HEADER_2015 = ("tpep_pickup_datetime", "pickup_longitude", "pickup_latitude")
_HEADER_UBER = ("date/time", "lat", "lon", "base")
#: longest single range ``parse_days`` accepts (a typo like 2041 should not allocate years)
MAX_DAYS = 366 * 20

#: what each format records besides the pickup (time and place): the demand table takes rates
#: from every pickup, and fares / trip times / drop-offs only from files that record them
FORMAT_RECORDS: dict[str, tuple[str, ...]] = {
    "tlc2015": ("pickup", "dropoff", "fare", "trip_time", "trip_distance"),
    "gcp8": ("pickup", "dropoff", "fare"),
    "uber2014": ("pickup",),
}
FORMAT_DESCRIPTIONS: dict[str, str] = {
    "tlc2015": "NYC TLC yellow-cab trips, 2015 schema (street hails and dispatch)",
    "gcp8": "NYC TLC yellow-cab trips, 8-column sample (street hails and dispatch)",
    "uber2014": "Uber app pickups, NYC 2014 (FiveThirtyEight FOIL): app demand, pickups only",
}

DROP_REASONS = (
    "unparsable_pickup_time",
    "unparsable_coordinates",
    "missing_coordinates",
    "outside_area",
)


@dataclass(frozen=True, eq=False)
class Trips:
    """Trips with a usable pickup, as parallel arrays (local wall-clock times)."""

    pickup_minute_of_week: I64  # Monday 00:00 = 0
    pickup_day_type: I64  # 0 weekday, 1 Saturday, 2 Sunday/holiday
    pickup_date_ord: I64  # proleptic Gregorian ordinal of the local pickup date
    pickup_s: F64  # seconds since 1970-01-01 local wall clock (for windows and ordering)
    lon: F64
    lat: F64
    dropoff_lon: F64  # NaN when unusable
    dropoff_lat: F64
    fare: F64  # NaN when unusable
    distance_m: F64  # NaN when the file has no measured distance
    duration_s: F64  # NaN when the file has no drop-off time
    file_index: I64  # which input file each trip came from
    files: tuple[str, ...]
    rows_read: tuple[int, ...]  # per file: data rows read
    dropped: tuple[dict[str, int], ...]  # per file: dropped rows by reason
    #: per file: pickups with a valid time and position anywhere (before the area filter); the
    #: citywide sample size the scale factor divides by
    citywide: tuple[int, ...] = field(default=())
    #: per file: hours of each (day type, slot) the file covers, shape (3, 48); see ``coverage``
    covered_h: tuple[F64, ...] = field(default=())
    #: per file: "span" (a random sample of every trip between its first and last date) or
    #: "windows" (every trip of a few short time windows)
    mode: tuple[str, ...] = field(default=())
    #: per file: its windows (windows mode; empty for a span sample)
    windows: tuple[tuple[Window, ...], ...] = field(default=())
    #: per trip: index of its window in its file's ``windows`` (-1 for span samples)
    window: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: per file: exact duplicate rows (every field equal to an earlier row) read once only
    duplicates: tuple[int, ...] = field(default=())
    #: per file: rows with a valid pickup time on a date outside ``days`` (not read)
    outside_days: tuple[int, ...] = field(default=())
    #: per file: its format (a key of ``FORMAT_RECORDS``)
    formats: tuple[str, ...] = field(default=())
    #: the local dates the files were restricted to (None: every date)
    days: frozenset[dt.date] | None = None

    @property
    def n(self) -> int:
        return int(self.lon.shape[0])

    def subset(self, mask: npt.NDArray[np.bool_]) -> Trips:
        return Trips(
            pickup_minute_of_week=self.pickup_minute_of_week[mask],
            pickup_day_type=self.pickup_day_type[mask],
            pickup_date_ord=self.pickup_date_ord[mask],
            pickup_s=self.pickup_s[mask],
            lon=self.lon[mask],
            lat=self.lat[mask],
            dropoff_lon=self.dropoff_lon[mask],
            dropoff_lat=self.dropoff_lat[mask],
            fare=self.fare[mask],
            distance_m=self.distance_m[mask],
            duration_s=self.duration_s[mask],
            file_index=self.file_index[mask],
            files=self.files,
            rows_read=self.rows_read,
            dropped=self.dropped,
            citywide=self.citywide,
            covered_h=self.covered_h,
            mode=self.mode,
            windows=self.windows,
            window=self.window[mask],
            duplicates=self.duplicates,
            outside_days=self.outside_days,
            formats=self.formats,
            days=self.days,
        )

    def restrict_windows(self, file_index: int, keep: set[int]) -> Trips:
        """Only the windows ``keep`` of a windows-mode file (its coverage shrinks to match)."""
        if self.mode[file_index] != "windows":
            raise DemandDataError(f"{self.files[file_index]} is not a file of time windows")
        wins = self.windows[file_index]
        bad = sorted(k for k in keep if not 0 <= k < len(wins))
        if bad:
            raise DemandDataError(
                f"{self.files[file_index]} has windows 0..{len(wins) - 1}, not {bad}"
            )
        mask = (self.file_index != file_index) | np.isin(self.window, sorted(keep))
        sub = self.subset(mask)
        covered = list(self.covered_h)
        citywide = list(self.citywide)
        covered[file_index] = sum(
            (wins[k].covered_h for k in keep), np.zeros((3, 48), dtype=np.float64)
        )
        citywide[file_index] = sum(wins[k].citywide for k in keep)
        return Trips(
            **{
                **{f: getattr(sub, f) for f in Trips.__dataclass_fields__},
                "covered_h": tuple(covered),
                "citywide": tuple(citywide),
            }
        )

    def report(self) -> dict[str, object]:
        return {
            "files": [
                {
                    "path": f,
                    "format": fmt,
                    "records": list(FORMAT_RECORDS[fmt]),
                    "rows": r,
                    "duplicates_removed": dup,
                    "outside_days": od,
                    "kept": int(np.sum(self.file_index == i)),
                    "dropped": dict(d),
                    "citywide_valid": c,
                    "mode": m,
                    "covered_h": round(float(h.sum()), 3),
                    "windows": [w.to_json() for w in ws],
                }
                for i, (f, fmt, r, dup, od, d, c, m, h, ws) in enumerate(
                    zip(
                        self.files,
                        self.formats,
                        self.rows_read,
                        self.duplicates,
                        self.outside_days,
                        self.dropped,
                        self.citywide,
                        self.mode,
                        self.covered_h,
                        self.windows,
                        strict=True,
                    )
                )
            ]
        }


def us_holidays(year: int) -> set[dt.date]:
    """Days NYC taxi demand looks like a Sunday: the six major US public holidays."""

    def nth_weekday(month: int, weekday: int, n: int) -> dt.date:
        d = dt.date(year, month, 1)
        d += dt.timedelta(days=(weekday - d.weekday()) % 7)
        return d + dt.timedelta(weeks=n - 1)

    def last_weekday(month: int, weekday: int) -> dt.date:
        d = dt.date(year, month + 1, 1) - dt.timedelta(days=1)
        return d - dt.timedelta(days=(d.weekday() - weekday) % 7)

    return {
        dt.date(year, 1, 1),
        last_weekday(5, 0),  # Memorial Day
        dt.date(year, 7, 4),
        nth_weekday(9, 0, 1),  # Labor Day
        nth_weekday(11, 3, 4),  # Thanksgiving
        dt.date(year, 12, 25),
    }


def day_type_of_date(d: dt.date) -> int:
    if d in us_holidays(d.year):
        return 2
    wd = d.weekday()
    return 0 if wd < 5 else (1 if wd == 5 else 2)


def _parse_time(text: str) -> dt.datetime:
    s = text.strip()
    if s.endswith(" UTC"):  # the GCP sample: local New York time despite the label
        s = s[:-4]
    return dt.datetime.fromisoformat(s)


def _float(text: str | None) -> float:
    if text is None or not text.strip():
        return float("nan")
    return float(text)


@dataclass(frozen=True, eq=False)
class Window:
    """One covered time window of a windows-mode file (local wall clock)."""

    start: dt.datetime
    end: dt.datetime
    covered_h: F64  # (3, 48)
    citywide: int  # valid citywide pickups inside the window

    def to_json(self) -> dict[str, object]:
        return {
            "start": self.start.isoformat(sep=" "),
            "end": self.end.isoformat(sep=" "),
            "citywide": self.citywide,
            "covered_h": round(float(self.covered_h.sum()), 4),
        }


def coverage(
    times: list[dt.datetime],
    window_gap_s: float = WINDOW_GAP_S,
    days: frozenset[dt.date] | None = None,
) -> tuple[str, F64, tuple[Window, ...]]:
    """What time a trip file covers: its mode, the hours of each (day type, slot) it covers,
    and (windows mode) its windows in time order.

    A file whose median gap between consecutive distinct pickup times (citywide) is at most
    ``window_gap_s`` is a census of short windows (the 2015-06 file: every trip of four 2-15
    minute windows): it covers the union of intervals between consecutive pickups closer than
    ``window_gap_s``. Otherwise it is a random sample of every trip between its first and last
    date, and each date in that span (and in ``days``, when given) covers all 48 slots of its
    day type. (The 2009-2015 samples
    are drawn by hashing the pickup timestamp: every trip of 1,678 random timestamps, up to 197
    trips on one timestamp; each trip is still included with the same probability, so counts
    estimate relative intensity without bias, with more variance than independent draws.)
    """
    cov = np.zeros((3, 48), dtype=np.float64)
    if not times:
        return "span", cov, ()
    all_sorted = sorted(times)
    ts = sorted(set(times))
    secs = np.array([(t - ts[0]).total_seconds() for t in ts])
    gaps = np.diff(secs)
    if gaps.size and float(np.median(gaps)) <= window_gap_s:
        windows: list[Window] = []
        start = 0
        for i in range(1, len(ts) + 1):
            if i == len(ts) or gaps[i - 1] > window_gap_s:
                wcov = np.zeros((3, 48), dtype=np.float64)
                _add_interval(wcov, ts[start], ts[i - 1])
                n = bisect.bisect_right(all_sorted, ts[i - 1]) - bisect.bisect_left(
                    all_sorted, ts[start]
                )
                windows.append(Window(ts[start], ts[i - 1], wcov, n))
                cov += wcov
                start = i
        return "windows", cov, tuple(windows)
    d = ts[0].date()
    while d <= ts[-1].date():
        if days is None or d in days:
            cov[day_type_of_date(d)] += 0.5
        d += dt.timedelta(days=1)
    return "span", cov, ()


def _add_interval(cov: F64, a: dt.datetime, b: dt.datetime) -> None:
    t = a
    while t < b:
        slot_end = t.replace(minute=(t.minute // 30) * 30, second=0, microsecond=0)
        slot_end += dt.timedelta(minutes=30)
        end = min(slot_end, b)
        cov[day_type_of_date(t.date()), (t.hour * 60 + t.minute) // 30] += (
            end - t
        ).total_seconds() / 3600.0
        t = end


def parse_days(text: str) -> frozenset[dt.date]:
    """Days from ``2014-04-01..2014-04-23,2014-04-25`` (inclusive ranges and single dates)."""
    days: set[dt.date] = set()
    for part in (t.strip() for t in text.split(",")):
        if not part:
            continue
        a, sep, b = part.partition("..")
        try:
            first = dt.date.fromisoformat(a.strip())
            last = dt.date.fromisoformat(b.strip()) if sep else first
        except ValueError:
            raise DemandDataError(
                f"days: expected YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD, not {part!r}"
            ) from None
        if last < first:
            raise DemandDataError(f"days: {part!r} ends before it starts")
        if (last - first).days > MAX_DAYS:
            raise DemandDataError(f"days: {part!r} spans more than {MAX_DAYS} days")
        days.update(first + dt.timedelta(days=k) for k in range((last - first).days + 1))
    if not days:
        raise DemandDataError("days: no day given")
    return frozenset(days)


def day_ranges(days: frozenset[dt.date] | set[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Consecutive runs of ``days`` as (first, last) pairs, in order."""
    out: list[tuple[dt.date, dt.date]] = []
    for d in sorted(days):
        if out and d - out[-1][1] == dt.timedelta(days=1):
            out[-1] = (out[-1][0], d)
        else:
            out.append((d, d))
    return out


def _zip_member(zf: zipfile.ZipFile, p: Path) -> zipfile.ZipInfo:
    """The one CSV member of a trip zip (``__MACOSX/`` resource forks and dot-files ignored)."""
    csvs = [
        i
        for i in zf.infolist()
        if not i.is_dir()
        and not any(part == "__MACOSX" for part in PurePosixPath(i.filename).parts)
        and not PurePosixPath(i.filename).name.startswith(".")
        and i.filename.lower().endswith(".csv")
    ]
    if len(csvs) != 1:
        names = ", ".join(i.filename for i in csvs)
        raise DemandDataError(
            f"trip file {p}: the zip holds {len(csvs)} CSV files"
            + (f" ({names})" if names else "")
            + ", expected exactly one"
        )
    if csvs[0].file_size > MAX_TRIP_FILE_BYTES:
        raise DemandDataError(
            f"trip file {p}: {csvs[0].filename} is {csvs[0].file_size} bytes, over the bound"
        )
    return csvs[0]


def _open_rows(p: Path, stack: contextlib.ExitStack) -> Iterator[list[str]]:
    """CSV rows of a trip file, plain or zipped (streamed from the zip, bounded)."""
    size = p.stat().st_size
    if size > MAX_TRIP_FILE_BYTES:
        raise DemandDataError(f"trip file {p} is {size} bytes, over the bound")
    if p.suffix.lower() == ".zip" or zipfile.is_zipfile(p):
        try:
            zf = stack.enter_context(zipfile.ZipFile(p))
        except zipfile.BadZipFile as e:
            raise DemandDataError(f"trip file {p} is not a readable zip: {e}") from e
        raw = stack.enter_context(zf.open(_zip_member(zf, p)))
        text = stack.enter_context(
            io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        )
        return csv.reader(text)
    return csv.reader(io.StringIO(p.read_text(encoding="utf-8-sig", errors="replace")))


def _detect(p: Path, first: list[str]) -> tuple[str, dict[str, int], bool]:
    """(format, column index by lower-case name, whether ``first`` is a header)."""
    header = [c.strip().lower() for c in first]
    idx = {h: i for i, h in enumerate(header)}
    if all(h in idx for h in _HEADER_2015):
        return "tlc2015", idx, True
    if all(h in idx for h in _HEADER_UBER):
        return "uber2014", idx, True
    if len(first) == 8:
        return "gcp8", {}, False
    raise DemandDataError(
        f"trip file {p}: neither the TLC 2015 header, the Uber 2014 header (Date/Time, Lat,"
        " Lon, Base) nor the 8-column sample format"
    )


#: (local time, its date, minute of week, day type, date ordinal, seconds since 1970 local)
_Stamp = tuple[dt.datetime, dt.date, int, int, int, float]
_NO_STAMP: _Stamp = (dt.datetime(1970, 1, 1), dt.date(1970, 1, 1), 0, 0, 0, 0.0)


def _stamp(
    text: str,
    parse: Callable[[str], dt.datetime],
    epoch: dt.datetime,
    day_types: dict[dt.date, int],
) -> _Stamp | None:
    try:
        t = parse(text)
    except ValueError:
        return None
    d = t.date()
    dtype = day_types.get(d)
    if dtype is None:
        dtype = day_types[d] = day_type_of_date(d)
    mow = t.weekday() * 1440 + t.hour * 60 + t.minute
    return t, d, mow, dtype, d.toordinal(), (t.replace(tzinfo=None) - epoch).total_seconds()


def _parse_uber_time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text.strip(), "%m/%d/%Y %H:%M:%S")


@dataclass
class _FileRead:
    """What one file gave: per-trip arrays of its kept trips and its counts."""

    arrays: dict[str, npt.NDArray[Any]]
    rows: int
    duplicates: int
    outside_days: int
    reasons: Counter[str]
    fmt: str
    citywide: int  # valid pickups anywhere (before the area filter)
    city_times: list[dt.datetime]  # their times (for the coverage)


def _coords(texts: list[str | None]) -> tuple[F64, npt.NDArray[np.bool_]]:
    """Parsed coordinates (NaN when blank) and which texts did not parse at all."""
    try:
        return np.array(texts, dtype=np.float64), np.zeros(len(texts), dtype=bool)
    except (ValueError, TypeError):
        pass  # some text is blank, missing or junk: one by one
    vals = np.empty(len(texts), dtype=np.float64)
    bad = np.zeros(len(texts), dtype=bool)
    for i, t in enumerate(texts):
        try:
            vals[i] = _float(t)
        except ValueError:
            vals[i], bad[i] = np.nan, True
    return vals, bad


def _read_file(
    p: Path,
    bbox: tuple[float, float, float, float],
    days: frozenset[dt.date] | None,
    day_types: dict[dt.date, int],
) -> _FileRead:
    epoch = dt.datetime(1970, 1, 1)
    with contextlib.ExitStack() as stack:
        try:
            reader = _open_rows(p, stack)
            first = next(reader, None)
            if first is None:
                raise DemandDataError(f"trip file {p} is empty")
            fmt, idx, has_header = _detect(p, first)
            # exact duplicates: each distinct row once, in the order of its first occurrence
            # (a dict keeps the first insertion's place; the tuples share the row's strings)
            distinct: dict[tuple[str, ...], None] = {}
            n_rows = 0
            if not has_header:
                distinct[tuple(first)] = None
                n_rows = 1
            for row in reader:
                n_rows += 1
                distinct[tuple(row)] = None
        except OSError as e:
            raise DemandDataError(f"cannot read trip file {p}: {e}") from e
        except (zipfile.BadZipFile, EOFError, zlib.error) as e:
            raise DemandDataError(f"trip file {p} is a damaged zip: {e}") from e
    urows = list(distinct)
    del distinct
    n_dup = n_rows - len(urows)
    if fmt == "tlc2015":
        i_t, i_lon, i_lat = (idx[h] for h in _HEADER_2015)
    elif fmt == "uber2014":
        i_t, i_lon, i_lat = idx["date/time"], idx["lon"], idx["lat"]
    else:
        i_t, i_lon, i_lat = 1, 2, 3
    parse_time = _parse_uber_time if fmt == "uber2014" else _parse_time
    reasons: Counter[str] = Counter()

    # pickup times: each distinct text parsed once (minute-resolution files repeat them)
    t_texts = [r[i_t] if len(r) > i_t else None for r in urows]
    stamp_of: dict[str | None, int] = {}
    stamps: list[_Stamp | None] = []
    sid = np.empty(len(urows), dtype=np.int64)
    for i, text in enumerate(t_texts):
        k = stamp_of.get(text)
        if k is None:
            k = stamp_of[text] = len(stamps)
            stamps.append(None if text is None else _stamp(text, parse_time, epoch, day_types))
        sid[i] = k
    ok_stamp = np.array([s is not None for s in stamps], dtype=bool)
    valid = [s if s is not None else _NO_STAMP for s in stamps]
    s_mow = np.array([s[2] for s in valid], dtype=np.int64)
    s_dtype = np.array([s[3] for s in valid], dtype=np.int64)
    s_ord = np.array([s[4] for s in valid], dtype=np.int64)
    s_ts = np.array([s[5] for s in valid], dtype=np.float64)
    s_in_days = np.array([days is None or s[1] in days for s in valid], dtype=bool)

    time_ok = ok_stamp[sid]
    reasons["unparsable_pickup_time"] = int(np.sum(~time_ok))
    in_days = time_ok & s_in_days[sid]
    n_days = int(np.sum(time_ok & ~in_days))
    lon, bad_lon = _coords([r[i_lon] if len(r) > i_lon else "x" for r in urows])
    lat, bad_lat = _coords([r[i_lat] if len(r) > i_lat else "x" for r in urows])
    coord_bad = bad_lon | bad_lat
    reasons["unparsable_coordinates"] = int(np.sum(in_days & coord_bad))
    parsed = in_days & ~coord_bad
    with np.errstate(invalid="ignore"):
        present = np.isfinite(lon) & np.isfinite(lat) & ~((lon == 0.0) & (lat == 0.0))
        inside = (lon >= bbox[0]) & (lon <= bbox[2]) & (lat >= bbox[1]) & (lat <= bbox[3])
    reasons["missing_coordinates"] = int(np.sum(parsed & ~present))
    city = parsed & present
    reasons["outside_area"] = int(np.sum(city & ~inside))
    keep = city & inside
    city_times = [valid[c][0] for c in sid[city].tolist()]
    kept = np.flatnonzero(keep)
    n = kept.size
    dlon, dlat, fare, dist, dur = (np.full(n, np.nan) for _ in range(5))
    if fmt != "uber2014":  # uber2014: pickups only (no drop-off, fare, distance or trip time)
        for j, i in enumerate(kept.tolist()):
            rec = urows[i]
            try:
                if fmt == "tlc2015":
                    if "dropoff_longitude" in idx:
                        dlon[j] = _float(rec[idx["dropoff_longitude"]])
                    if "dropoff_latitude" in idx:
                        dlat[j] = _float(rec[idx["dropoff_latitude"]])
                    if "fare_amount" in idx:
                        fare[j] = _float(rec[idx["fare_amount"]])
                    if "trip_distance" in idx:
                        dist[j] = _float(rec[idx["trip_distance"]]) * MILE_M
                    if "tpep_dropoff_datetime" in idx:
                        t_off = _parse_time(rec[idx["tpep_dropoff_datetime"]])
                        pickup = valid[int(sid[i])][0]
                        dur[j] = (t_off - pickup).total_seconds()
                else:
                    fare[j], dlon[j], dlat[j] = _float(rec[0]), _float(rec[4]), _float(rec[5])
            except (ValueError, IndexError):
                pass  # the pickup stays; what failed stays NaN
        zero = (dlon == 0.0) & (dlat == 0.0)
        dlon[zero] = dlat[zero] = np.nan
        with np.errstate(invalid="ignore"):
            fare[~((fare >= FARE_RANGE[0]) & (fare <= FARE_RANGE[1]))] = np.nan
            dur[~((dur >= DURATION_RANGE_S[0]) & (dur <= DURATION_RANGE_S[1]))] = np.nan
            dist[~(dist > 0)] = np.nan
    pick = sid[kept]
    arrays: dict[str, npt.NDArray[Any]] = {
        "mow": s_mow[pick],
        "dtype": s_dtype[pick],
        "date": s_ord[pick],
        "ts": s_ts[pick],
        "lon": lon[kept],
        "lat": lat[kept],
        "dlon": dlon,
        "dlat": dlat,
        "fare": fare,
        "dist": dist,
        "dur": dur,
    }
    return _FileRead(arrays, n_rows, n_dup, n_days, reasons, fmt, int(np.sum(city)), city_times)


def read_trips(
    paths: list[str | os.PathLike[str]],
    bbox: tuple[float, float, float, float],
    days: frozenset[dt.date] | None = None,
) -> Trips:
    """Read trip files; keep pickups inside ``bbox`` (min_lon, min_lat, max_lon, max_lat).

    Exact duplicate rows (every field equal) are read once and counted per file. With ``days``,
    only pickups on those local dates are read (the others are counted, not dropped as bad):
    the file's coverage and citywide count are those of the kept days.
    """
    reads: list[_FileRead] = []
    covered: list[F64] = []
    windows: list[tuple[Window, ...]] = []
    window_of_trip: list[I64] = []
    modes: list[str] = []
    epoch = dt.datetime(1970, 1, 1)
    day_types: dict[dt.date, int] = {}
    for path in paths:
        p = Path(path)
        r = _read_file(p, bbox, days, day_types)
        reads.append(r)
        mode, cov, wins = coverage(r.city_times, days=days)
        r.city_times = []  # only the coverage needs them
        modes.append(mode)
        windows.append(wins)
        if wins:
            starts = np.array([(w.start - epoch).total_seconds() for w in wins])
            window_of_trip.append(
                (np.searchsorted(starts, r.arrays["ts"], side="right") - 1).astype(np.int64)
            )
        else:
            window_of_trip.append(np.full(r.arrays["ts"].shape[0], -1, dtype=np.int64))
        covered.append(cov)
        log.info(
            "read %s (%s): %d rows, %d exact duplicates, dropped %s",
            p,
            r.fmt,
            r.rows,
            r.duplicates,
            dict(r.reasons),
        )

    def cat(k: str, dtype: type[np.generic]) -> npt.NDArray[Any]:
        parts = [r.arrays[k] for r in reads]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    def i64(k: str) -> I64:
        return cat(k, np.int64)

    def f64(k: str) -> F64:
        return cat(k, np.float64)

    file_index = (
        np.concatenate(
            [np.full(r.arrays["ts"].shape[0], fi, dtype=np.int64) for fi, r in enumerate(reads)]
        )
        if reads
        else np.zeros(0, dtype=np.int64)
    )
    return Trips(
        pickup_minute_of_week=i64("mow"),
        pickup_day_type=i64("dtype"),
        pickup_date_ord=i64("date"),
        pickup_s=f64("ts"),
        lon=f64("lon"),
        lat=f64("lat"),
        dropoff_lon=f64("dlon"),
        dropoff_lat=f64("dlat"),
        fare=f64("fare"),
        distance_m=f64("dist"),
        duration_s=f64("dur"),
        file_index=file_index,
        files=tuple(str(p) for p in paths),
        rows_read=tuple(r.rows for r in reads),
        dropped=tuple({k: int(r.reasons.get(k, 0)) for k in DROP_REASONS} for r in reads),
        citywide=tuple(r.citywide for r in reads),
        covered_h=tuple(covered),
        mode=tuple(modes),
        windows=tuple(windows),
        window=(np.concatenate(window_of_trip) if window_of_trip else np.zeros(0, dtype=np.int64)),
        duplicates=tuple(r.duplicates for r in reads),
        outside_days=tuple(r.outside_days for r in reads),
        formats=tuple(r.fmt for r in reads),
        days=days,
    )
