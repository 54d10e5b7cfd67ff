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

log = logging.getLogger(__name__)

Recheck = Callable[[Verdict], Sequence[Reason]]

PULL_KIND = "pull"  # written by tools.field.logs_pull (a layer above)


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
