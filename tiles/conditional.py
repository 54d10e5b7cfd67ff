"""Time-windowed no-entry rules (``motor_vehicle:conditional``, ``access:conditional``).

A rule such as ``no @ (Mo-Fr 07:00-09:00)`` becomes closed intervals of *minute of week*
(Monday 00:00 is 0, the week has 10,080 minutes), so that "is this link closed at time t" is a
vectorised comparison. The subset of the opening_hours grammar handled, and its conservative
reading (a taxi must never be sent into a closed street, so doubt closes rather than opens):

* weekday selectors ``Mo-Fr``, ``Sa,Su``, ``Su[2]`` (the n-th weekday is read as every such day);
  a rule without days applies to every day;
* time spans ``07:00-09:00``, lists ``07:00-09:00,16:00-18:00``, spans over midnight
  ``17:00-05:00`` (into the next day), ``24:00``; days without a time mean the whole day;
* rules separated by ``;`` are united (``15:00-05:00; Su 12:00-05:00`` closes Sundays from noon),
  except a later ``off`` rule, which reopens its days (``...; Su PH off``);
* month prefixes (``Oct-Apr:``) are ignored: the window applies all year;
* ``sunset-sunrise`` is read as 18:00-06:00;
* ``PH``/``SH`` (public or school holidays) alone cannot be evaluated without a holiday calendar
  and are skipped; conditions on anything but time (``AND occupants>1``, ``weight>7.5``) are not
  no-entry windows for a taxi and are skipped. Skipped rules are reported.
* Values that close a road to a cruising taxi: ``no``, ``private``, ``destination``,
  ``delivery``, ``customers``, ``permit``, ``agricultural``, ``forestry``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MINUTES_PER_DAY = 1440
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY
DAYS: tuple[str, ...] = ("Mo", "Tu", "We", "Th", "Fr", "Sa", "Su")
CLOSING_VALUES = frozenset(
    {"no", "private", "destination", "delivery", "customers", "permit", "agricultural", "forestry"}
)

_TIME = r"(\d{1,2}):(\d{2})"
_SPAN = re.compile(rf"^{_TIME}\s*-\s*{_TIME}$")
_DAY_RANGE = re.compile(
    r"^(Mo|Tu|We|Th|Fr|Sa|Su)(?:\[[^\]]*\])?(?:\s*-\s*(Mo|Tu|We|Th|Fr|Sa|Su))?$"
)
_MONTH_PREFIX = re.compile(
    r"^(?:(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)(?:\s*\d{1,2})?"
    r"(?:\s*-\s*(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)(?:\s*\d{1,2})?)?\s*,?\s*)+:?\s*"
)


@dataclass(frozen=True)
class Windows:
    """Closed intervals ``[start, end)`` in minutes of week, sorted and non-overlapping."""

    intervals: tuple[tuple[int, int], ...] = ()
    skipped: tuple[str, ...] = field(default=())

    def closed_at(self, minute_of_week: int) -> bool:
        m = minute_of_week % MINUTES_PER_WEEK
        return any(s <= m < e for s, e in self.intervals)


def _merge(intervals: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(i for i in intervals if i[1] > i[0]):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return tuple(out)


def _subtract(
    intervals: tuple[tuple[int, int], ...], remove: list[tuple[int, int]]
) -> tuple[tuple[int, int], ...]:
    result = list(intervals)
    for rs, re_ in remove:
        nxt: list[tuple[int, int]] = []
        for s, e in result:
            if e <= rs or s >= re_:
                nxt.append((s, e))
                continue
            if s < rs:
                nxt.append((s, rs))
            if e > re_:
                nxt.append((re_, e))
        result = nxt
    return _merge(result)


def _week_spans(days: list[int], spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Minute-of-week intervals for spans (minutes of day, end may exceed a day) on days."""
    out: list[tuple[int, int]] = []
    for d in days:
        for s, e in spans:
            start = d * MINUTES_PER_DAY + s
            end = d * MINUTES_PER_DAY + e
            if end <= MINUTES_PER_WEEK:
                out.append((start, end))
            else:  # wraps from Sunday night into Monday
                out.append((start, MINUTES_PER_WEEK))
                out.append((0, end - MINUTES_PER_WEEK))
    return out


class _Skip(Exception):
    pass


def _parse_days(token: str) -> list[int]:
    days: list[int] = []
    for part in token.split(","):
        part = part.strip()
        if part in {"PH", "SH"}:
            continue
        m = _DAY_RANGE.match(part)
        if not m:
            raise _Skip(f"day selector {part!r}")
        a = DAYS.index(m.group(1))
        b = DAYS.index(m.group(2)) if m.group(2) else a
        days.extend(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return sorted(set(days))


def _parse_spans(token: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for part in token.split(","):
        part = part.strip()
        if part == "sunset-sunrise":
            spans.append((18 * 60, 24 * 60 + 6 * 60))
            continue
        m = _SPAN.match(part)
        if not m:
            raise _Skip(f"time span {part!r}")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 > 24 or h2 > 48 or m1 > 59 or m2 > 59:
            raise _Skip(f"time span {part!r}")
        start = h1 * 60 + m1
        end = h2 * 60 + m2
        if end <= start:
            end += MINUTES_PER_DAY
        spans.append((start, end))
    return spans


def _parse_rule(rule: str) -> tuple[list[tuple[int, int]], bool]:
    """One ``;``-separated rule: (week intervals, is_off). Raises _Skip when not evaluable."""
    rule = _MONTH_PREFIX.sub("", rule.strip())
    off = False
    words = rule.replace(": ", " ").rstrip(":").split()
    if words and words[-1].lower() in {"off", "closed"}:
        off = True
        words = words[:-1]
    if any(w.upper() == "AND" or any(c in w for c in "<>=") for w in words):
        raise _Skip(f"not a time condition: {rule!r}")
    day_words = [
        w.rstrip(":")
        for w in words
        if not any(ch.isdigit() for ch in w.split("[")[0]) and w != "sunset-sunrise"
    ]
    time_words = [w for w in words if w not in day_words and w.rstrip(":") not in day_words]
    day_token = ",".join(w.strip(",") for w in day_words if w.strip(","))
    if day_token:
        only_holidays = all(p.strip() in {"PH", "SH"} for p in day_token.split(","))
        if only_holidays:
            raise _Skip(f"holiday-only rule {rule!r}")
        days = _parse_days(day_token)
    else:
        days = list(range(7))
    spans = _parse_spans(",".join(time_words)) if time_words else [(0, MINUTES_PER_DAY)]
    return _week_spans(days, spans), off


def _matching_paren(text: str) -> int:
    """Index of the parenthesis closing the one at ``text[0]`` (or the last index)."""
    depth = 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            return i
    return len(text) - 1


def _split_conditions(value: str) -> list[tuple[str, str]]:
    """Split ``v1 @ (c1); v2 @ c2`` into [(v1, c1), (v2, c2)]."""
    out: list[tuple[str, str]] = []
    rest = value.strip()
    current_value = ""
    while rest:
        if "@" in rest.split("(")[0] or not current_value:
            if "@" not in rest:
                raise _Skip(f"no '@' in {value!r}")
            head, rest = rest.split("@", 1)
            current_value = head.strip().strip(";,").strip()
            rest = rest.strip()
        if rest.startswith("("):
            i = _matching_paren(rest)
            cond = rest[1:i]
            rest = rest[i + 1 :].lstrip(")").strip()
        else:
            # "no @ Fr 17:00-22:00; no @ Su": the part after ';' may start a new value
            cut = rest.find(";")
            cond, rest = (rest, "") if cut == -1 else (rest[:cut], rest[cut:])
        out.append((current_value, cond.strip()))
        rest = rest.lstrip(",;").strip()
        if rest and "@" not in rest.split("(")[0] and not rest.startswith("("):
            # a bare continuation such as "; Su 12:00-05:00" outside parentheses
            out.append((current_value, rest))
            break
    return out


def parse_conditional(value: str) -> Windows:
    """Parse one ``*:conditional`` value into no-entry windows for a cruising taxi."""
    closed: list[tuple[int, int]] = []
    reopen: list[tuple[int, int]] = []
    skipped: list[str] = []
    try:
        parts = _split_conditions(value)
    except _Skip as e:
        return Windows((), (str(e),))
    for v, cond in parts:
        if v.strip().lower() not in CLOSING_VALUES:
            skipped.append(f"value {v!r} does not close the road")
            continue
        for rule in cond.split(";"):
            if not rule.strip():
                continue
            try:
                spans, off = _parse_rule(rule)
            except _Skip as e:
                skipped.append(str(e))
                continue
            (reopen if off else closed).extend(spans)
    merged = _merge(closed)
    if reopen:
        merged = _subtract(merged, reopen)
    return Windows(merged, tuple(skipped))


def minute_of_week(weekday: int, hour: int, minute: int) -> int:
    """Minute of week for an ISO weekday (Monday=0) and a wall-clock time."""
    return weekday * MINUTES_PER_DAY + hour * 60 + minute
