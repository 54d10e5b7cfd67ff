"""Conditional restrictions (``access:conditional``, ``motor_vehicle:conditional``, ...).

A value follows OSM's *Conditional restrictions* scheme: ``value @ condition`` restrictions
separated by ``;`` (outside parentheses), a condition in parentheses when it holds a ``;``, and
several conditions of one restriction joined by ``AND``. Only the restrictions whose value closes
the road to a cruising taxi matter here (:data:`CLOSING_VALUES`); a restriction that opens
(``yes @ ...``) is ignored: the way's plain tags decide, which never opens more than they do.

Each condition is one of:

* **a time**, in the opening_hours grammar, read by the maintained ``opening-hours`` library
  (PyPI ``opening-hours-py``, a binding of the Rust crate): weekday lists and ranges, several
  spans (``Mo-Fr 07:00-09:00, 16:00-18:00``), spans over midnight, ``||``, week numbers, months
  and date ranges (``Apr-Oct``, ``Dec 24-Jan 06``), years, ``PH`` with the country's
  holiday calendar, ``sunrise``/``sunset`` from the coordinates of the area. ``unknown`` (and any
  "unknown" state) counts as closed;
* **a property of the vehicle or of its load**, evaluated for a taxi (:data:`TAXI`): a
  comparison (``weight>7.5``, ``height>3.8``, ``length>12``, ``axles>=3``, ``occupants>1``, ...)
  holds if it can hold for some taxi in the ranges of :data:`TAXI`, and a restriction whose
  condition cannot hold for a taxi does not bind it; the words in :data:`NOT_A_TAXI` (``hazmat``,
  ``trailer``, ...) name loads or vehicles a cruising taxi never is. ``occupants`` counts the
  driver alone: the planner sends an *empty* cab.

Two readings of one time: mappers often write ``;`` where they mean "and also"
(``07:30-09:00; 13:00-16:00``), which opening_hours reads as a later rule replacing the earlier
ones on its days (leaving only 13:00-16:00). A taxi must not enter under either reading, so the
closed time is the union of the value as written and the same value with its rule separators
``;`` read as the additional-rule separator ``,``.

One normalisation is applied before the library sees a time (and counted): a colon right after a
weekday or holiday selector (``Su: 12:00-05:00``, common in Japan) is dropped.

**Fail closed**: a restriction that closes the road under a condition that cannot be read or
evaluated (a syntax error, unbalanced parentheses, an unknown condition such as ``wet`` or
``stay<2 hours``, school holidays ``SH``, for which the library has no calendar) closes it
*at all times*, and the reason is kept (:attr:`Windows.doubts`) for the importer's report.

Time is *minute of week* (Monday 00:00 is 0, the week has 10,080 minutes). :meth:`Windows.closed_at`
answers for an ordinary week (no public holiday); a rule that depends on the date (holidays,
months, weeks, years, sun times: :attr:`Windows.dated`) is there the union over a reference year,
and :meth:`Windows.closed_on` answers for a real local date.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # imported where a time is read: the agent's tick reads none (issue 20)
    import opening_hours

MINUTES_PER_DAY = 1440
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY
DAYS: tuple[str, ...] = ("Mo", "Tu", "We", "Th", "Fr", "Sa", "Su")
#: access values that close a road to a cruising taxi
CLOSING_VALUES = frozenset(
    {
        "no",
        "private",
        "destination",
        "delivery",
        "customers",
        "permit",
        "agricultural",
        "forestry",
        "emergency",
        "discouraged",
    }
)
#: oneway:conditional values
ONEWAY_FORWARD_VALUES = frozenset({"yes", "true", "1"})
ONEWAY_BACKWARD_VALUES = frozenset({"-1", "reverse"})

#: Ranges of a taxi's properties (min, max): a comparison holds for a taxi if some value in the
#: range satisfies it. Cars up to 3.5 t gross (a large van-type taxi), 2 axles, 4 wheels.
TAXI: dict[str, tuple[float, float]] = {
    "weight": (0.8, 3.5),  # t, gross
    "maxweight": (0.8, 3.5),
    "weightrating": (0.8, 3.5),
    "emptyweight": (0.8, 3.0),
    "axleload": (0.4, 2.0),  # t
    "height": (1.3, 2.1),  # m
    "width": (1.5, 2.1),  # m
    "length": (3.4, 5.6),  # m
    "axles": (2.0, 2.0),
    "wheels": (4.0, 4.0),
    "occupants": (1.0, 1.0),  # a cruising taxi: the driver alone
    "seats": (4.0, 9.0),
}
#: Condition words that name a vehicle or load a cruising taxi never is or carries.
NOT_A_TAXI = frozenset(
    {
        "hazmat",
        "hazmat:water",
        "trailer",
        "caravan",
        "articulated",
        "hgv",
        "goods",
        "bus",
        "agricultural",
        "tourist_bus",
        "coach",
        "motorcycle",
        "moped",
        "bicycle",
        "foot",
        "horse",
        "emergency",
    }
)
#: Reference year (Monday 2026-01-05 for 53 weeks) over which a date-dependent rule is folded
#: into an ordinary week for :meth:`Windows.closed_at` (fixed, so that builds are reproducible).
REFERENCE_MONDAY = dt.datetime(2026, 1, 5)
_REFERENCE_WEEKS = 53

_COMPARISON = re.compile(
    r"^([a-z_:]+)\s*(<=|>=|<|>|=)\s*(\d+(?:\.\d+)?)\s*(t|m|st|kg|ft)?$", re.IGNORECASE
)
_WEEKDAY_COLON = re.compile(r"\b((?:Mo|Tu|We|Th|Fr|Sa|Su|PH|SH)(?:\[[^\]]*\])?)\s*:\s*(?=\d)")
_DATED = re.compile(
    r"\b(PH|SH|easter|week|sunrise|sunset|dawn|dusk|\d{4}|Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep"
    r"|Oct|Nov|Dec)\b|\[",
    re.IGNORECASE,
)
_SCHOOL_HOLIDAYS = re.compile(r"\bSH\b")
_SUN = re.compile(r"sunrise|sunset|dawn|dusk", re.IGNORECASE)
_UNIT_FACTOR = {"kg": 0.001, "st": 0.907, "ft": 0.3048}

Bool = npt.NDArray[np.bool_]


def _read_errors() -> tuple[type[Exception], ...]:
    """What the library raises for a text it cannot read (ParserError is not in its type
    stubs)."""
    import opening_hours

    return (
        opening_hours.ParserError,  # type: ignore[attr-defined]  # not in its stubs
        SyntaxError,
        ValueError,
    )


class _Doubt(Exception):
    pass


@dataclass(frozen=True)
class Area:
    """Where the rules are evaluated: (lat, lon) for sun times, country for public holidays.

    ``country`` None: the library derives it (and the time zone) from the coordinates.
    """

    coords: tuple[float, float] | None = None
    country: str | None = None


@dataclass(frozen=True)
class _Time:
    """One time condition: its readings as opening_hours texts."""

    texts: tuple[str, ...]


@dataclass(frozen=True)
class _Restriction:
    value: str
    times: tuple[_Time, ...]  # ANDed; none: the restriction holds at all times


@dataclass(frozen=True)
class Windows:
    """Closed intervals ``[start, end)`` in minutes of an ordinary week, and how they came.

    ``skipped``: restrictions that do not bind a taxi (with why); ``doubts``: why the road is
    closed at all times for doubt (empty when everything was read); ``normalized``: texts the
    importer had to correct before reading them.
    """

    intervals: tuple[tuple[int, int], ...] = ()
    skipped: tuple[str, ...] = ()
    doubts: tuple[str, ...] = ()
    normalized: tuple[str, ...] = ()
    dated: bool = False
    malformed: bool = False
    value: str = ""
    area: Area = field(default_factory=Area)
    restrictions: tuple[_Restriction, ...] = ()

    def closed_at(self, minute_of_week: int) -> bool:
        """Closed at this minute of an ordinary week (no holiday; dated rules: any week)."""
        m = minute_of_week % MINUTES_PER_WEEK
        return any(s <= m < e for s, e in self.intervals)

    def closed_on(self, day: dt.date) -> Bool:
        """Minutes (1440 booleans, local time) of the local date ``day`` when it is closed."""
        if self.doubts:
            return np.ones(MINUTES_PER_DAY, dtype=bool)
        if not self.dated:
            start = day.weekday() * MINUTES_PER_DAY
            week = _mask_of(self.intervals)
            return week[start : start + MINUTES_PER_DAY].copy()
        return _closed_on(self.value, self.area, self.restrictions, day).copy()

    def closed_at_datetime(self, when: dt.datetime) -> bool:
        """Closed at a local wall-clock time (holidays and the date taken into account)."""
        return bool(self.closed_on(when.date())[when.hour * 60 + when.minute])


def _mask_of(intervals: tuple[tuple[int, int], ...]) -> Bool:
    mask = np.zeros(MINUTES_PER_WEEK, dtype=bool)
    for s, e in intervals:
        mask[s:e] = True
    return mask


def _intervals_of(mask: Bool) -> tuple[tuple[int, int], ...]:
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return tuple((int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True))


def _split_outside_parens(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise _Doubt(f"unbalanced parentheses in {text!r}")
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise _Doubt(f"unbalanced parentheses in {text!r}")
    parts.append("".join(cur))
    return parts


def _strip_parens(text: str) -> str:
    text = text.strip()
    while text.startswith("(") and text.endswith(")"):
        inner = text[1:-1]
        try:
            _split_outside_parens(inner, ";")
        except _Doubt:
            break  # "(a) , (b)": the outer pair is not one pair
        text = inner.strip()
    return text


def _replace_rule_separators(text: str) -> str:
    """``;`` outside double-quoted comments -> ``,`` (the additional-rule separator)."""
    out: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        out.append("," if ch == ";" and not quoted else ch)
    return "".join(out)


def _vehicle_condition(part: str) -> bool | None:
    """True/False when ``part`` is a vehicle/load property (does it hold for a taxi?), None if
    it is not one."""
    word = part.strip().lower()
    if word in NOT_A_TAXI:
        return False
    m = _COMPARISON.match(word)
    if not m:
        return None
    name, op, num, unit = m.group(1), m.group(2), float(m.group(3)), (m.group(4) or "").lower()
    if name not in TAXI:
        raise _Doubt(f"unknown vehicle property {part.strip()!r}")
    num *= _UNIT_FACTOR.get(unit, 1.0)
    lo, hi = TAXI[name]
    if op == ">":
        return hi > num
    if op == ">=":
        return hi >= num
    if op == "<":
        return lo < num
    if op == "<=":
        return lo <= num
    return lo <= num <= hi


def _compile(text: str, area: Area, holidays: bool) -> opening_hours.OpeningHours:
    """The library's expression: without holidays (an ordinary week) or with the area's.

    Coordinates are passed only where they matter (sun times; the country of the holidays when
    it is not given), since finding the country from them costs the library a third of a second
    once per process. Wall-clock times are local (the library takes the time zone of the
    coordinates).
    """
    import opening_hours

    use_coords = area.coords is not None and (
        _SUN.search(text) is not None or (holidays and area.country is None)
    )
    return opening_hours.OpeningHours(
        text,
        coords=area.coords if use_coords else None,
        country=area.country if holidays else None,
        auto_country=holidays and area.country is None and use_coords,
        auto_timezone=use_coords,
    )


@lru_cache(maxsize=4096)
def _compiled(text: str, area: Area, holidays: bool) -> opening_hours.OpeningHours:
    return _compile(text, area, holidays)


def _time_condition(part: str, area: Area, normalized: list[str]) -> _Time:
    text = _WEEKDAY_COLON.sub(r"\1 ", part.strip())
    if _SCHOOL_HOLIDAYS.search(text):
        # the library has no school-holiday calendar: SH would never match, opening the road
        raise _Doubt(f"school holidays (SH) cannot be evaluated in {part.strip()!r}")
    if text != part.strip():
        normalized.append(f"{part.strip()!r} read as {text!r}")
    read_errors = _read_errors()
    try:
        _compiled(text, area, False)
    except read_errors as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _Doubt(f"cannot read the time {part.strip()!r} ({first})") from None
    texts = [text]
    additive = _replace_rule_separators(text)
    if additive != text:
        try:
            _compiled(additive, area, False)
            texts.append(additive)
        except read_errors:
            pass
    return _Time(tuple(texts))


def _holds_mask(
    times: tuple[_Time, ...], area: Area, holidays: bool, start: dt.datetime, minutes: int
) -> Bool:
    """Minutes from ``start`` (local) when every time condition holds (open or unknown)."""
    import opening_hours

    out = np.ones(minutes, dtype=bool)
    end = start + dt.timedelta(minutes=minutes)
    for t in times:
        holds = np.zeros(minutes, dtype=bool)
        for text in t.texts:
            oh = _compiled(text, area, holidays)
            for a, b, state, _comment in oh.intervals(start, end):
                if state == opening_hours.State.CLOSED:
                    continue
                a = a.replace(tzinfo=None)
                b = b.replace(tzinfo=None)
                i = max(0, int((a - start).total_seconds() // 60))
                j = min(minutes, -int(-(b - start).total_seconds() // 60))
                holds[i:j] = True
        out &= holds
    return out


def _closed_mask(
    restrictions: tuple[_Restriction, ...],
    area: Area,
    holidays: bool,
    start: dt.datetime,
    minutes: int,
) -> Bool:
    closed = np.zeros(minutes, dtype=bool)
    for r in restrictions:
        if not r.times:
            closed[:] = True
            break
        closed |= _holds_mask(r.times, area, holidays, start, minutes)
    return closed


@lru_cache(maxsize=16384)
def _closed_on(
    value: str, area: Area, restrictions: tuple[_Restriction, ...], day: dt.date
) -> Bool:
    start = dt.datetime(day.year, day.month, day.day)
    mask = _closed_mask(restrictions, area, True, start, MINUTES_PER_DAY)
    mask.setflags(write=False)
    return mask


def _parse(value: str, closing: frozenset[str], area: Area) -> Windows:
    skipped: list[str] = []
    normalized: list[str] = []
    restrictions: list[_Restriction] = []
    try:
        parts = [p for p in _split_outside_parens(value, ";") if p.strip()]
        if not parts:
            raise _Doubt(f"empty value {value!r}")
        pending: list[tuple[str, str]] = []
        for p in parts:
            if "@" not in p:
                raise _Doubt(f"no '@' in {p.strip()!r}")
            v, cond = p.split("@", 1)
            pending.append((v.strip().lower(), cond))
    except _Doubt as e:
        return Windows(
            ((0, MINUTES_PER_WEEK),), doubts=(str(e),), malformed=True, value=value, area=area
        )
    doubts: list[str] = []
    for v, cond in pending:
        if v not in closing:
            skipped.append(f"value {v!r} does not close the road")
            continue
        try:
            cond_text = _strip_parens(cond)
            if not cond_text:
                raise _Doubt(f"empty condition for {v!r}")
            times: list[_Time] = []
            applies = True
            for sub in re.split(r"\s+AND\s+", cond_text):
                sub = _strip_parens(sub)
                vehicle = _vehicle_condition(sub)
                if vehicle is None:
                    times.append(_time_condition(sub, area, normalized))
                elif not vehicle:
                    applies = False
                    skipped.append(f"{v} @ {cond_text!r}: {sub.strip()!r} is not a taxi")
        except _Doubt as e:
            doubts.append(str(e))
            continue
        if applies:
            restrictions.append(_Restriction(v, tuple(times)))
    if doubts:
        return Windows(
            ((0, MINUTES_PER_WEEK),),
            tuple(skipped),
            tuple(doubts),
            tuple(normalized),
            value=value,
            area=area,
        )
    rs = tuple(restrictions)
    texts = [t for r in rs for tm in r.times for t in tm.texts]
    dated = any(_DATED.search(t) for t in texts)
    # a rule without a date selector is the same every week: one week is enough; a dated one is
    # folded over the reference year (closed in a minute of the week if closed in any week)
    n_weeks = _REFERENCE_WEEKS if dated else 1
    year = _closed_mask(rs, area, False, REFERENCE_MONDAY, n_weeks * MINUTES_PER_WEEK)
    week: Bool = np.asarray(year.reshape(n_weeks, MINUTES_PER_WEEK).any(axis=0))
    return Windows(
        _intervals_of(week), tuple(skipped), (), tuple(normalized), dated, False, value, area, rs
    )


@lru_cache(maxsize=4096)
def _parse_cached(value: str, closing: frozenset[str], area: Area) -> Windows:
    return _parse(value, closing, area)


def parse_conditional(
    value: str,
    closing: Iterable[str] = CLOSING_VALUES,
    area: Area | None = None,
) -> Windows:
    """Parse one ``*:conditional`` value into no-entry windows for a cruising taxi.

    ``closing``: the restriction values that close (for ``oneway:conditional``, the direction
    values whose opposite direction is closed); ``area``: coordinates/country for sun times and
    public holidays (none: default sun times, no holidays).
    """
    return _parse_cached(value, frozenset(closing), area or Area())


def minute_of_week(weekday: int, hour: int, minute: int) -> int:
    """Minute of week for an ISO weekday (Monday=0) and a wall-clock time."""
    return weekday * MINUTES_PER_DAY + hour * 60 + minute


def check_country(code: str) -> str:
    """``code`` if the holiday calendar knows this ISO country code (``US``, ``JP``, ``MC``)."""
    import opening_hours

    try:
        opening_hours.OpeningHours("PH", country=code)
    except opening_hours.UnknownCountryError as e:  # type: ignore[attr-defined]  # not in its stubs
        raise ValueError(f"unknown country code {code!r} (an ISO 3166 code such as US, JP)") from e
    return code


#: keys whose restriction binds a cruising taxi (with ``:forward``/``:backward`` variants)
TAXI_ACCESS_KEYS: tuple[str, ...] = ("access", "vehicle", "motor_vehicle", "motorcar", "taxi")
#: which restriction values close, by kind: ``access`` (the road), ``oneway:forward`` (the way's
#: direction is closed while ``oneway`` is ``-1``), ``oneway:backward`` (the reverse is closed
#: while it is ``yes``)
CLOSING_BY_KIND: dict[str, frozenset[str]] = {
    "access": CLOSING_VALUES,
    "oneway:forward": ONEWAY_BACKWARD_VALUES,
    "oneway:backward": ONEWAY_FORWARD_VALUES,
}
