"""The calendar of trip files: US holidays, day types (weekday, Saturday, Sunday/holiday), and
the ``--days`` lists (``2014-04-01..2014-04-23,2014-04-25``) that restrict a read to some dates."""

from __future__ import annotations

import datetime as dt

from models.errors import DemandDataError

#: longest single range ``parse_days`` accepts (a typo like 2041 should not allocate years)
MAX_DAYS = 366 * 20


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
