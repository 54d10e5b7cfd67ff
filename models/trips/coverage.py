"""What time a trip file covers: a random sample of every trip over a span of dates, or a census
of a few short windows (:func:`coverage`), as hours per (day type, 30-minute slot)."""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.trips.days import day_type_of_date

F64 = npt.NDArray[np.float64]

#: Consecutive pickups closer than this belong to one covered window (see :func:`coverage`).
WINDOW_GAP_S = 600.0


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
