"""Reading NYC TLC yellow-cab trip files into numpy arrays, dropping bad rows by reason.

Two formats are understood (both present in ``data/trips``):

* the TLC 2015 schema, with a header: ``tpep_pickup_datetime``, ``tpep_dropoff_datetime``,
  ``pickup_longitude/latitude``, ``dropoff_longitude/latitude``, ``trip_distance`` (miles),
  ``fare_amount``, ...;
* the headerless 8-column sample (``fare_amount, pickup_datetime, pickup_lon, pickup_lat,
  dropoff_lon, dropoff_lat, passenger_count, key``) whose datetimes are local New York time
  despite their "UTC" label.

Times stay local wall-clock time (minute of week, day type) because demand follows the city's
clock. A row is dropped, and counted under its reason, when its pickup time or coordinates do
not parse, are missing (blank or 0,0), or lie outside the given bounding box. A row whose fare
or drop-off is unusable keeps its pickup (demand) but not its fare/drop-off (NaN).
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import io
import itertools
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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
                    "rows": r,
                    "kept": int(np.sum(self.file_index == i)),
                    "dropped": dict(d),
                    "citywide_valid": c,
                    "mode": m,
                    "covered_h": round(float(h.sum()), 3),
                    "windows": [w.to_json() for w in ws],
                }
                for i, (f, r, d, c, m, h, ws) in enumerate(
                    zip(
                        self.files,
                        self.rows_read,
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
    times: list[dt.datetime], window_gap_s: float = WINDOW_GAP_S
) -> tuple[str, F64, tuple[Window, ...]]:
    """What time a trip file covers: its mode, the hours of each (day type, slot) it covers,
    and (windows mode) its windows in time order.

    A file whose median gap between consecutive distinct pickup times (citywide) is at most
    ``window_gap_s`` is a census of short windows (the 2015-06 file: every trip of four 2-15
    minute windows): it covers the union of intervals between consecutive pickups closer than
    ``window_gap_s``. Otherwise it is a random sample of every trip between its first and last
    date, and each date in that span covers all 48 slots of its day type. (The 2009-2015 samples
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


def read_trips(
    paths: list[str | os.PathLike[str]],
    bbox: tuple[float, float, float, float],
) -> Trips:
    """Read trip files; keep pickups inside ``bbox`` (min_lon, min_lat, max_lon, max_lat)."""
    cols: dict[str, list[float]] = {
        k: []
        for k in (
            "mow",
            "dtype",
            "date",
            "ts",
            "lon",
            "lat",
            "dlon",
            "dlat",
            "fare",
            "dist",
            "dur",
            "file",
        )
    }
    rows_read: list[int] = []
    dropped: list[dict[str, int]] = []
    citywide: list[int] = []
    covered: list[F64] = []
    windows: list[tuple[Window, ...]] = []
    window_of_trip: list[int] = []
    modes: list[str] = []
    epoch = dt.datetime(1970, 1, 1)
    day_type_cache: dict[dt.date, int] = {}
    for fi, path in enumerate(paths):
        p = Path(path)
        try:
            size = p.stat().st_size
            if size > MAX_TRIP_FILE_BYTES:
                raise DemandDataError(f"trip file {p} is {size} bytes, over the bound")
            text = p.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise DemandDataError(f"cannot read trip file {p}: {e}") from e
        reader = csv.reader(io.StringIO(text))
        first = next(reader, None)
        if first is None:
            raise DemandDataError(f"trip file {p} is empty")
        header = [c.strip().lower() for c in first]
        if all(h in header for h in _HEADER_2015):
            idx = {h: i for i, h in enumerate(header)}
            fmt = "tlc2015"
            body: Iterator[list[str]] = reader
        elif len(first) == 8:
            fmt = "gcp8"
            idx = {}
            body = itertools.chain([first], reader)
        else:
            raise DemandDataError(
                f"trip file {p}: neither the TLC 2015 header nor the 8-column sample format"
            )
        reasons: Counter[str] = Counter()
        n_rows = 0
        n_city = 0
        city_times: list[dt.datetime] = []
        for row in body:
            n_rows += 1
            try:
                if fmt == "tlc2015":
                    t = _parse_time(row[idx["tpep_pickup_datetime"]])
                else:
                    t = _parse_time(row[1])
            except (ValueError, IndexError):
                reasons["unparsable_pickup_time"] += 1
                continue
            try:
                if fmt == "tlc2015":
                    lon = _float(row[idx["pickup_longitude"]])
                    lat = _float(row[idx["pickup_latitude"]])
                else:
                    lon, lat = _float(row[2]), _float(row[3])
            except (ValueError, IndexError):
                reasons["unparsable_coordinates"] += 1
                continue
            if not (np.isfinite(lon) and np.isfinite(lat)) or (lon == 0.0 and lat == 0.0):
                reasons["missing_coordinates"] += 1
                continue
            n_city += 1
            city_times.append(t)
            if not (bbox[0] <= lon <= bbox[2] and bbox[1] <= lat <= bbox[3]):
                reasons["outside_area"] += 1
                continue
            dlon = dlat = fare = dist = dur = float("nan")
            try:
                if fmt == "tlc2015":
                    dlon = (
                        _float(row[idx["dropoff_longitude"]])
                        if "dropoff_longitude" in idx
                        else dlon
                    )
                    dlat = (
                        _float(row[idx["dropoff_latitude"]]) if "dropoff_latitude" in idx else dlat
                    )
                    fare = _float(row[idx["fare_amount"]]) if "fare_amount" in idx else fare
                    if "trip_distance" in idx:
                        dist = _float(row[idx["trip_distance"]]) * MILE_M
                    if "tpep_dropoff_datetime" in idx:
                        t_off = _parse_time(row[idx["tpep_dropoff_datetime"]])
                        dur = (t_off - t).total_seconds()
                else:
                    fare, dlon, dlat = _float(row[0]), _float(row[4]), _float(row[5])
            except (ValueError, IndexError):
                pass  # the pickup stays; what failed stays NaN
            if dlon == 0.0 and dlat == 0.0:
                dlon = dlat = float("nan")
            if not (FARE_RANGE[0] <= fare <= FARE_RANGE[1]):
                fare = float("nan")
            if not (DURATION_RANGE_S[0] <= dur <= DURATION_RANGE_S[1]):
                dur = float("nan")
            if not (dist > 0):
                dist = float("nan")
            d = t.date()
            dtype = day_type_cache.get(d)
            if dtype is None:
                dtype = day_type_cache[d] = day_type_of_date(d)
            cols["mow"].append(t.weekday() * 1440 + t.hour * 60 + t.minute)
            cols["dtype"].append(dtype)
            cols["date"].append(d.toordinal())
            cols["ts"].append((t.replace(tzinfo=None) - epoch).total_seconds())
            cols["lon"].append(lon)
            cols["lat"].append(lat)
            cols["dlon"].append(dlon)
            cols["dlat"].append(dlat)
            cols["fare"].append(fare)
            cols["dist"].append(dist)
            cols["dur"].append(dur)
            cols["file"].append(fi)
        rows_read.append(n_rows)
        dropped.append({r: int(reasons.get(r, 0)) for r in DROP_REASONS})
        citywide.append(n_city)
        mode, cov, wins = coverage(city_times)
        modes.append(mode)
        windows.append(wins)
        n_kept_before = len(window_of_trip)
        n_kept_now = len(cols["ts"])
        if wins:
            starts = np.array([(w.start - epoch).total_seconds() for w in wins])
            ts_new = np.asarray(cols["ts"][n_kept_before:n_kept_now])
            window_of_trip.extend((np.searchsorted(starts, ts_new, side="right") - 1).tolist())
        else:
            window_of_trip.extend([-1] * (n_kept_now - n_kept_before))
        covered.append(cov)
        log.info("read %s: %d rows, dropped %s", p, n_rows, dict(reasons))

    def i64(k: str) -> I64:
        return np.asarray(cols[k], dtype=np.int64)

    def f64(k: str) -> F64:
        return np.asarray(cols[k], dtype=np.float64)

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
        file_index=i64("file"),
        files=tuple(str(p) for p in paths),
        rows_read=tuple(rows_read),
        dropped=tuple(dropped),
        citywide=tuple(citywide),
        covered_h=tuple(covered),
        mode=tuple(modes),
        windows=tuple(windows),
        window=np.asarray(window_of_trip, dtype=np.int64),
    )
