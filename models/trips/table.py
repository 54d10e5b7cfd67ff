"""The trips read from one or more files (:class:`Trips`): parallel per-trip arrays in local
wall-clock time, with per-file counts (rows, duplicates, drops by reason, coverage, windows)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from models.errors import DemandDataError
from models.trips.coverage import Window
from models.trips.formats import FORMAT_RECORDS

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


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
