"""One trip file into per-trip arrays, in named steps: its distinct rows (exact duplicates read
once), the pickup times (each distinct text parsed once), the pickup positions (bad rows dropped
and counted by reason), then what each kept trip records besides its pickup."""

from __future__ import annotations

import contextlib
import datetime as dt
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.errors import DemandDataError
from models.trips.days import day_type_of_date
from models.trips.formats import (
    Details,
    detect,
    open_rows,
    pickup_columns,
    pickup_time_parser,
    read_details,
    to_float,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

#: Fares outside this range (currency units) are not used for fare statistics.
FARE_RANGE = (2.5, 500.0)
#: Trip durations outside this range (seconds) are not used for duration statistics.
DURATION_RANGE_S = (30.0, 4 * 3600.0)

DROP_REASONS = (
    "unparsable_pickup_time",
    "unparsable_coordinates",
    "missing_coordinates",
    "outside_area",
)

#: the local clock's zero for ``Trips.pickup_s`` (seconds since 1970-01-01, wall clock)
EPOCH = dt.datetime(1970, 1, 1)

#: (local time, its date, minute of week, day type, date ordinal, seconds since 1970 local)
_Stamp = tuple[dt.datetime, dt.date, int, int, int, float]
_NO_STAMP: _Stamp = (dt.datetime(1970, 1, 1), dt.date(1970, 1, 1), 0, 0, 0, 0.0)


@dataclass
class FileRead:
    """What one file gave: per-trip arrays of its kept trips and its counts."""

    arrays: dict[str, npt.NDArray[Any]]
    rows: int
    duplicates: int
    outside_days: int
    reasons: Counter[str]
    fmt: str
    citywide: int  # valid pickups anywhere (before the area filter)
    city_times: list[dt.datetime]  # their times (for the coverage)


def read_file(
    p: Path,
    bbox: tuple[float, float, float, float],
    days: frozenset[dt.date] | None,
    day_types: dict[dt.date, int],
) -> FileRead:
    """Read one trip file; keep the pickups inside ``bbox`` on ``days`` (None: every date).
    ``day_types`` caches the day type of each date across files."""
    fmt, idx, n_rows, urows = _distinct_rows(p)
    i_t, i_lon, i_lat = pickup_columns(fmt, idx)
    reasons: Counter[str] = Counter()
    stamps = _PickupTimes([r[i_t] if len(r) > i_t else None for r in urows], fmt, days, day_types)
    reasons["unparsable_pickup_time"] = int(np.sum(~stamps.ok))
    in_days = stamps.ok & stamps.in_days
    lon, lat, city, keep = _pickup_positions(urows, i_lon, i_lat, in_days, bbox, reasons)
    kept = np.flatnonzero(keep)
    pickups = [stamps.time(int(i)) for i in kept.tolist()] if fmt == "tlc2015" else []
    details = _clean(read_details(fmt, idx, [urows[i] for i in kept.tolist()], pickups))
    pick = stamps.sid[kept]
    arrays: dict[str, npt.NDArray[Any]] = {
        "mow": stamps.mow[pick],
        "dtype": stamps.day_type[pick],
        "date": stamps.date_ord[pick],
        "ts": stamps.ts[pick],
        "lon": lon[kept],
        "lat": lat[kept],
        "dlon": details.dropoff_lon,
        "dlat": details.dropoff_lat,
        "fare": details.fare,
        "dist": details.distance_m,
        "dur": details.duration_s,
    }
    return FileRead(
        arrays,
        n_rows,
        n_rows - len(urows),
        int(np.sum(stamps.ok & ~in_days)),
        reasons,
        fmt,
        int(np.sum(city)),
        [stamps.time(i) for i in np.flatnonzero(city).tolist()],
    )


def _distinct_rows(p: Path) -> tuple[str, dict[str, int], int, list[tuple[str, ...]]]:
    """(format, column index, data rows read, the distinct data rows in first-seen order)."""
    with contextlib.ExitStack() as stack:
        try:
            reader = open_rows(p, stack)
            first = next(reader, None)
            if first is None:
                raise DemandDataError(f"trip file {p} is empty")
            fmt, idx, has_header = detect(p, first)
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
    return fmt, idx, n_rows, list(distinct)


def _stamp(
    text: str,
    parse: Callable[[str], dt.datetime],
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
    return t, d, mow, dtype, d.toordinal(), (t.replace(tzinfo=None) - EPOCH).total_seconds()


class _PickupTimes:
    """The pickup time of every row, each distinct text parsed once (minute-resolution files
    repeat them): per row the index ``sid`` of its stamp; per stamp whether it parsed (``ok``),
    lies on one of ``days`` (``in_days``), and its minute of week, day type, date ordinal and
    local seconds, all indexed by row."""

    def __init__(
        self,
        texts: list[str | None],
        fmt: str,
        days: frozenset[dt.date] | None,
        day_types: dict[dt.date, int],
    ) -> None:
        parse = pickup_time_parser(fmt)
        stamp_of: dict[str | None, int] = {}
        stamps: list[_Stamp | None] = []
        sid = np.empty(len(texts), dtype=np.int64)
        for i, text in enumerate(texts):
            k = stamp_of.get(text)
            if k is None:
                k = stamp_of[text] = len(stamps)
                stamps.append(None if text is None else _stamp(text, parse, day_types))
            sid[i] = k
        valid = [s if s is not None else _NO_STAMP for s in stamps]
        self.sid = sid
        self._valid = valid
        self.ok: B = np.array([s is not None for s in stamps], dtype=bool)[sid]
        self.in_days: B = np.array([days is None or s[1] in days for s in valid], dtype=bool)[sid]
        self.mow = np.array([s[2] for s in valid], dtype=np.int64)
        self.day_type = np.array([s[3] for s in valid], dtype=np.int64)
        self.date_ord = np.array([s[4] for s in valid], dtype=np.int64)
        self.ts = np.array([s[5] for s in valid], dtype=np.float64)

    def time(self, row: int) -> dt.datetime:
        """The local pickup time of ``row`` (which must have parsed)."""
        return self._valid[int(self.sid[row])][0]


def _coords(texts: list[str | None]) -> tuple[F64, B]:
    """Parsed coordinates (NaN when blank) and which texts did not parse at all."""
    try:
        return np.array(texts, dtype=np.float64), np.zeros(len(texts), dtype=bool)
    except (ValueError, TypeError):
        pass  # some text is blank, missing or junk: one by one
    vals = np.empty(len(texts), dtype=np.float64)
    bad = np.zeros(len(texts), dtype=bool)
    for i, t in enumerate(texts):
        try:
            vals[i] = to_float(t)
        except ValueError:
            vals[i], bad[i] = np.nan, True
    return vals, bad


def _pickup_positions(
    urows: list[tuple[str, ...]],
    i_lon: int,
    i_lat: int,
    in_days: B,
    bbox: tuple[float, float, float, float],
    reasons: Counter[str],
) -> tuple[F64, F64, B, B]:
    """(lon, lat, valid anywhere in the city, kept: also inside ``bbox``) of every row whose
    time is good and in ``days``; the others are counted in ``reasons``."""
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
    return lon, lat, city, city & inside


def _clean(d: Details) -> Details:
    """Unusable details to NaN: a 0,0 drop-off, a fare or trip time out of range, no distance."""
    zero = (d.dropoff_lon == 0.0) & (d.dropoff_lat == 0.0)
    d.dropoff_lon[zero] = d.dropoff_lat[zero] = np.nan
    with np.errstate(invalid="ignore"):
        d.fare[~((d.fare >= FARE_RANGE[0]) & (d.fare <= FARE_RANGE[1]))] = np.nan
        d.duration_s[
            ~((d.duration_s >= DURATION_RANGE_S[0]) & (d.duration_s <= DURATION_RANGE_S[1]))
        ] = np.nan
        d.distance_m[~(d.distance_m > 0)] = np.nan
    return d
