"""A reliability figure from trip logs, in the spirit of the production system's SLO.

    reliability = availability x quality
    availability = ticks with a validated route / ticks
    quality      = validated routes without a safety violation when re-checked / validated routes

Input: an iterable of tick records (plain dicts as read from the msgpack trip log). A tick
record is a map whose ``"safety"`` key holds a verdict in :meth:`Verdict.to_record` form; a
bare verdict record (``"kind": "safety_verdict"``) counts too. A ``"kind": "tick"`` record
without a readable verdict is counted as unreadable (not as a tick); every other map (start,
stop, events) is skipped and counted. A ``"kind": "pull"`` record (the last record of a file
from ``nagashi logs pull``) is not skipped: its ``dropped_total`` is what the cab's outbox
dropped at its bound before upload, ticks the figures cannot include (``outbox_dropped``, per
vehicle).

Route stability (issue 15), from the ``instruction`` of the tick records (the route the driver
was shown) and the ``countdown`` the runtime logs between ticks:

* ``repeated_link_route_share``: route ticks whose route uses some link twice / route ticks;
* ``reversals_per_h``: A→B→A changes of the next manoeuvre within
  :data:`REVERSAL_WINDOW_S` (:class:`ReversalCounter`) per hour of ticks (tick gaps over
  :data:`MAX_TICK_GAP_S` are not counted as time);
* ``countdown_max_error_m``: the largest difference between the distance to the manoeuvre shown
  between ticks and the along-route distance from the cab's position on the route: the fix
  projected onto the route near where the distance driven since the tick puts it
  (:func:`countdown_errors`), for fixes on the route (within :data:`ON_ROUTE_M`) before the
  manoeuvre. None when no tick logged a countdown.

Re-checking on replay: with a ``recheck`` function (e.g. :class:`RouteRechecker` over the
bundle's tiles, with the *current* rules), each validated route is judged again from the logged
matched link, position on it and minute of week. Without one, quality reflects the logged
verdicts only (a validated verdict that nevertheless lists reasons counts as a violation).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from safety.config import SafetyConfig
from safety.errors import SafetyLogError
from safety.inputs import BusinessArea
from safety.reasons import Reason
from safety.route import check_route, hard_to_judge, route_array
from safety.verdict import KIND, Verdict
from tiles import TilesError, TileStore
from tiles.geo import LocalProjection, haversine_m

log = logging.getLogger(__name__)

Recheck = Callable[[Verdict], Sequence[Reason]]

PULL_KIND = "pull"  # written by tools.field.logs_pull (a layer above)

#: an A→B→A change of the next manoeuvre counts as a reversal when B lasted at most this long
REVERSAL_WINDOW_S = 120.0
#: tick gaps longer than this (the agent stopped, the receiver silent) are not driving time
MAX_TICK_GAP_S = 60.0
#: a fix this close to the shown route is on it (the countdown is judged there only)
ON_ROUTE_M = 30.0
#: the cab's position on the route is looked for this far either side of the distance driven
#: since the tick (less than half a loop round a block: the other pass of a revisited street)
COUNTDOWN_SEARCH_M = 80.0

ManeuverKey = tuple[object, ...]


def maneuver_key(instruction: object) -> ManeuverKey | None:
    """What identifies the next manoeuvre of an instruction record (JSON form): a turn by its
    kind, street and junction; "continue" by its street. None for non-route instructions."""
    if not isinstance(instruction, Mapping) or instruction.get("kind") != "route":
        return None
    m = instruction.get("maneuver")
    if not isinstance(m, Mapping):
        return None
    if m.get("type") == "turn":
        loc = m.get("location")
        where = (
            tuple(round(float(x), 5) for x in loc)
            if isinstance(loc, list | tuple) and len(loc) == 2
            else ()
        )
        return ("turn", str(m.get("modifier")), str(m.get("street")), *where)
    return ("continue", str(m.get("street")))


class ReversalCounter:
    """Counts A→B→A changes of the next manoeuvre: a tick whose manoeuvre is the one before
    the current one, when the current one was first shown at most ``window_s`` earlier."""

    def __init__(self, window_s: float = REVERSAL_WINDOW_S) -> None:
        self.window_s = window_s
        self.reversals = 0
        self._runs: list[tuple[ManeuverKey, float]] = []  # the last two (key, first shown)

    def add(self, time_s: float, key: ManeuverKey | None) -> bool:
        """One route tick's manoeuvre; True when it reverses the last change."""
        if key is None:
            return False
        runs = self._runs
        if runs and runs[-1][0] == key:
            return False
        back = len(runs) == 2 and runs[0][0] == key and time_s - runs[1][1] <= self.window_s
        runs.append((key, time_s))
        del runs[:-2]
        if back:
            self.reversals += 1
        return back


def _has_repeat(edges: object) -> bool:
    if not isinstance(edges, list | tuple):
        return False
    return len(set(edges)) < len(edges)


def countdown_errors(instruction: Mapping[str, Any], countdown: object) -> list[float]:
    """|shown − along-route| distance to the manoeuvre for each logged between-tick fix
    ``[time_s, lon, lat, shown_m]`` after the tick of ``instruction`` (see module docstring)."""
    m = instruction.get("maneuver")
    geom = (instruction.get("geometry") or {}).get("coordinates")
    if not isinstance(m, Mapping) or not isinstance(geom, list) or len(geom) < 2:
        return []
    if not isinstance(countdown, list):
        return []
    turn_m = float(m["distance_m"])
    x0, y0 = float(geom[0][0]), float(geom[0][1])
    proj = LocalProjection(x0, y0)
    xs, ys = proj.to_xy([float(p[0]) for p in geom], [float(p[1]) for p in geom])
    seg_x, seg_y = xs[1:] - xs[:-1], ys[1:] - ys[:-1]
    seg = (seg_x**2 + seg_y**2) ** 0.5
    start = [0.0]
    for length in seg.tolist():
        start.append(start[-1] + length)
    out: list[float] = []
    odo = 0.0
    last = (x0, y0)
    for entry in countdown:
        if not isinstance(entry, list | tuple) or len(entry) < 4:
            continue
        lon, lat, shown = float(entry[1]), float(entry[2]), float(entry[3])
        odo += float(haversine_m(last[0], last[1], lon, lat))
        last = (lon, lat)
        px, py = proj.to_xy(lon, lat)
        best = (float("inf"), 0.0)
        lo, hi = odo - COUNTDOWN_SEARCH_M, odo + COUNTDOWN_SEARCH_M
        for i in range(seg.shape[0]):
            a, b = max(lo - start[i], 0.0), min(hi - start[i], float(seg[i]))
            if a > b or seg[i] <= 0:
                continue
            t = ((px - xs[i]) * seg_x[i] + (py - ys[i]) * seg_y[i]) / float(seg[i])
            t = min(max(float(t), a), b)
            qx = xs[i] + t / seg[i] * seg_x[i] - px
            qy = ys[i] + t / seg[i] * seg_y[i] - py
            off = float((qx * qx + qy * qy) ** 0.5)
            if off < best[0]:
                best = (off, start[i] + t)
        if best[0] > ON_ROUTE_M or best[1] > turn_m:
            continue
        out.append(abs(shown - (turn_m - best[1])))
    return out


@dataclass(frozen=True)
class StabilityReport:
    route_ticks: int = 0
    repeated_link_routes: int = 0
    reversals: int = 0
    hours: float = 0.0
    countdown_checked: int = 0
    countdown_max_error_m: float | None = None
    countdown_over_30m: int = 0

    @property
    def repeated_link_route_share(self) -> float | None:
        return self.repeated_link_routes / self.route_ticks if self.route_ticks else None

    @property
    def reversals_per_h(self) -> float | None:
        return self.reversals / self.hours if self.hours > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "route_ticks": self.route_ticks,
            "repeated_link_routes": self.repeated_link_routes,
            "repeated_link_route_share": self.repeated_link_route_share,
            "reversals": self.reversals,
            "tick_hours": self.hours,
            "reversals_per_h": self.reversals_per_h,
            "countdown_checked": self.countdown_checked,
            "countdown_max_error_m": self.countdown_max_error_m,
            "countdown_over_30m": self.countdown_over_30m,
        }


def stability(records: Iterable[object]) -> StabilityReport:
    """The route-stability figures of tick records, per run in record order (module docstring)."""
    route_ticks = repeated = checked = over = 0
    max_err: float | None = None
    seconds = 0.0
    counters: dict[str, ReversalCounter] = {}
    last_time: dict[str, float] = {}
    shown: dict[str, Mapping[str, Any]] = {}  # each run's last route instruction
    for rec in records:
        if not isinstance(rec, Mapping) or rec.get("kind") not in ("tick", "stop"):
            continue
        run = str(rec.get("run_id"))
        prev_ins = shown.pop(run, None)
        if prev_ins is not None:
            errs = countdown_errors(prev_ins, rec.get("countdown"))
            checked += len(errs)
            over += sum(e > 30.0 for e in errs)
            if errs:
                max_err = max([*errs, *([] if max_err is None else [max_err])])
        if rec.get("kind") != "tick":
            continue
        t = rec.get("time_s")
        if isinstance(t, int | float):
            gap = float(t) - last_time.get(run, float(t))
            if 0 < gap <= MAX_TICK_GAP_S:
                seconds += gap
            last_time[run] = float(t)
        ins = rec.get("instruction")
        if not isinstance(ins, Mapping) or ins.get("kind") != "route":
            continue
        route_ticks += 1
        repeated += _has_repeat(ins.get("route_edges"))
        counters.setdefault(run, ReversalCounter()).add(
            float(t) if isinstance(t, int | float) else 0.0, maneuver_key(ins)
        )
        shown[run] = ins
    return StabilityReport(
        route_ticks=route_ticks,
        repeated_link_routes=repeated,
        reversals=sum(c.reversals for c in counters.values()),
        hours=seconds / 3600.0,
        countdown_checked=checked,
        countdown_max_error_m=max_err,
        countdown_over_30m=over,
    )


@dataclass(frozen=True)
class SloReport:
    ticks: int
    validated: int
    routes_checked: int
    routes_clean: int
    rechecked: bool
    fallbacks_by_reason: dict[str, int] = field(default_factory=dict)
    violations_by_reason: dict[str, int] = field(default_factory=dict)
    skipped_records: int = 0  # maps that are not tick records
    unreadable_verdicts: int = 0  # tick records whose verdict could not be read
    #: per vehicle, records its outbox dropped at the bound (from pulled files; {} otherwise)
    outbox_dropped: dict[str, int] = field(default_factory=dict)

    @property
    def availability(self) -> float | None:
        return self.validated / self.ticks if self.ticks else None

    @property
    def quality(self) -> float | None:
        return self.routes_clean / self.routes_checked if self.routes_checked else None

    @property
    def reliability(self) -> float | None:
        a, q = self.availability, self.quality
        if a is None:
            return None
        if q is None:  # no route was ever given: nothing wrong was shown, nothing useful either
            return 0.0
        return a * q

    def to_json(self) -> dict[str, Any]:
        return {
            "ticks": self.ticks,
            "validated": self.validated,
            "availability": self.availability,
            "routes_checked": self.routes_checked,
            "routes_clean": self.routes_clean,
            "quality": self.quality,
            "reliability": self.reliability,
            "rechecked": self.rechecked,
            "fallbacks_by_reason": dict(self.fallbacks_by_reason),
            "violations_by_reason": dict(self.violations_by_reason),
            "skipped_records": self.skipped_records,
            "unreadable_verdicts": self.unreadable_verdicts,
            "outbox_dropped": dict(self.outbox_dropped),
        }


def verdict_of(record: object) -> Mapping[str, Any] | None:
    """The verdict map inside a tick record (or the record itself), else None."""
    if not isinstance(record, Mapping):
        return None
    inner = record.get("safety")
    if isinstance(inner, Mapping):
        return inner
    if record.get("kind") == KIND:
        return record
    return None


def slo(records: Iterable[object], recheck: Recheck | None = None) -> SloReport:
    """Availability x quality over tick records (see the module docstring)."""
    ticks = validated = checked = clean = skipped = unreadable = 0
    fallbacks: Counter[str] = Counter()
    violations: Counter[str] = Counter()
    dropped: dict[str, int] = {}
    for rec in records:
        if isinstance(rec, Mapping) and rec.get("kind") == PULL_KIND:
            n = rec.get("dropped_total")
            if type(n) is int and n >= 0:
                vid = str(rec.get("vehicle_id"))
                dropped[vid] = max(dropped.get(vid, 0), n)
            else:
                skipped += 1
            continue
        raw = verdict_of(rec)
        if raw is None:
            if isinstance(rec, Mapping) and rec.get("kind") == "tick":
                unreadable += 1  # a tick logged without its verdict
            else:
                skipped += 1
            continue
        try:
            v = Verdict.from_record(raw)
        except SafetyLogError as e:
            unreadable += 1
            log.warning("unreadable safety verdict skipped: %s", e)
            continue
        ticks += 1
        if not v.ok:
            fallbacks.update(v.codes)
            continue
        validated += 1
        checked += 1
        found: tuple[str, ...]
        if recheck is not None:
            found = tuple(dict.fromkeys(r.value for r in recheck(v)))
        else:
            found = v.codes
        if found:
            violations.update(found)
        else:
            clean += 1
    return SloReport(
        ticks=ticks,
        validated=validated,
        routes_checked=checked,
        routes_clean=clean,
        rechecked=recheck is not None,
        fallbacks_by_reason=dict(sorted(fallbacks.items())),
        violations_by_reason=dict(sorted(violations.items())),
        skipped_records=skipped,
        unreadable_verdicts=unreadable,
        outbox_dropped=dict(sorted(dropped.items())),
    )


class RouteRechecker:
    """Re-check logged validated routes against road tiles with the current route rules.

    Loads only the tiles of the route's links and of the matched link (the store caches them).
    """

    def __init__(
        self,
        store: TileStore,
        config: SafetyConfig = SafetyConfig(),
        area: BusinessArea | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.area = area

    def __call__(self, v: Verdict) -> tuple[Reason, ...]:
        if v.edge_id is None or v.fraction is None:
            return (Reason.ROUTE_NOT_FROM_POSITION,)
        route = route_array(list(v.route))
        if route is None or route.size == 0:
            return (Reason.ROUTE_MISSING,)
        if route.size > self.config.route.max_links:
            return (Reason.ROUTE_ABSURD_LENGTH,)
        try:
            tiles = {self.store.tile_of_edge(int(e)) for e in (v.edge_id, *route.tolist())}
            g = self.store.graph(tiles)
        except TilesError:
            return (Reason.ROUTE_UNKNOWN_LINK,)
        mask = self.area.edge_mask(g) if self.area is not None else None
        reasons = list(
            check_route(g, route, v.edge_id, v.fraction, v.minute_of_week, self.config.route, mask)
        )
        if hard_to_judge(g, v.edge_id, v.fraction, route, self.config.route):
            reasons.append(Reason.HARD_TO_JUDGE_ROAD)
        return tuple(reasons)
