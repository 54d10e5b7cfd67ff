"""Real passengers: trip records replayed on held-out days (``nagashi simulate --passengers``).

Each record whose pickup lies in the shift window of a replayed day is one passenger, appearing
at its recorded time on the link its pickup snaps to (``models.snap.snap_pickups``, the snapping
the demand table was built with). A two-way street with no usable drop-off direction gets one of
its two directions drawn once with the snap weights (a fixed seed): the passengers are the same
for every seed. There is no arrival multiplier: the records are the passengers.

What a record does not carry is drawn per seed (``tools.sim.world.draw_trips``) from the
yellow-cab distributions of the demand table: the Uber 2014 pickups carry only time and place, so
their fare (log-normal on the link's 10/50/90 % fares), trip time and distance (the link's means
scaled by fare / mean fare) and drop-off cell (the pickup cell's drop-off distribution) are drawn;
a TLC record keeps its own fare, trip time, distance and drop-off cell. The table has these per
link and per cell, not per hour, so the draw does not depend on the hour. Seeds then vary the
starting positions, the patience draws and the drawn values, never the passengers.

No leakage: the demand table records the days its rates were built from (``demand.json``
``days``); :func:`in_sample_days` names the replayed days among them, which ``nagashi simulate``
refuses unless ``--allow-in-sample``.

What the planner sees: the table's rates are absolute (the whole yellow fleet, ``scale_factor``
real trips per sample record). Replaying one source's records, the simulated world has that
source's volume, so the cabs see ``rates * share`` with ``share`` the mean records per shift of
the table's own days (same source, same weekday type, same hours: in-sample days only) over the
table's expected pickups in that shift: the planner is told the volume of the days it learnt
from, never that of the day it is tested on.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.demand import CellGrid, DemandTable
from models.snap import snap_pickups
from models.statistics import network_bbox
from models.trips import day_ranges, day_type_of_date, read_trips
from tiles.graph import Graph
from tools.sim.world import Passengers, World, draw_trips, drop_links, walk_out_of_traps

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: a record of a file that has no drop-off: its drop-off cell is drawn
DRAW = -2
_EPOCH = dt.datetime(1970, 1, 1)


@dataclass(frozen=True, eq=False)
class DayRecords:
    """The passengers of one replayed shift, in time order."""

    day: dt.date
    start_minute_of_week: float
    link: I64  # local link
    t_s: F64  # seconds from the shift start
    fare: F64  # NaN: drawn
    duration_s: F64  # NaN: drawn
    distance_m: F64  # NaN: drawn
    dropoff_cell: I64  # DRAW: drawn; -1: outside the grid

    @property
    def count(self) -> int:
        return int(self.link.shape[0])


@dataclass(frozen=True, eq=False)
class Replay:
    files: tuple[str, ...]
    formats: tuple[str, ...]
    days: tuple[DayRecords, ...]
    not_snapped: int  # records in the shift windows farther than the snap radius from a link
    in_sample: tuple[dt.date, ...]  # replayed days the demand table was built from
    share: float  # what the cabs see: rates * share (module docs)

    @property
    def records(self) -> int:
        return sum(d.count for d in self.days)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": [
                {"path": f, "format": k} for f, k in zip(self.files, self.formats, strict=True)
            ],
            "days": [d.day.isoformat() for d in self.days],
            "records": self.records,
            "records_per_day": {d.day.isoformat(): d.count for d in self.days},
            "not_snapped": self.not_snapped,
            "in_sample": bool(self.in_sample),
            "in_sample_days": [d.isoformat() for d in self.in_sample],
            "planner_rate_share": self.share,
        }


def table_days(table: DemandTable) -> list[tuple[dt.date, dt.date]] | None:
    """The day ranges the table's rates were built from (None: the table does not say)."""
    info = table.meta.get("days")
    if not isinstance(info, dict):
        return None
    ranges = info.get("filter") or info.get("ranges")
    if not ranges and info.get("first") and info.get("last"):
        ranges = [[info["first"], info["last"]]]  # too many dates listed: the whole span
    if not ranges:
        return []
    return [(dt.date.fromisoformat(a), dt.date.fromisoformat(b)) for a, b in ranges]


def in_sample_days(table: DemandTable, days: frozenset[dt.date]) -> list[dt.date] | None:
    """Replayed days the table's rates were built from; None when the table does not say."""
    ranges = table_days(table)
    if ranges is None:
        return None
    return sorted(d for d in days if any(a <= d <= b for a, b in ranges))


def describe_days(days: frozenset[dt.date] | list[dt.date]) -> str:
    return ",".join(
        a.isoformat() if a == b else f"{a.isoformat()}..{b.isoformat()}"
        for a, b in day_ranges(set(days))
    )


def _shift_records(
    graph: Graph,
    grid: CellGrid,
    paths: list[str | os.PathLike[str]],
    bbox: tuple[float, float, float, float],
    days: frozenset[dt.date],
    start_minute_of_day: float,
    hours: float,
) -> tuple[list[DayRecords], list[int], tuple[str, ...], tuple[str, ...]]:
    trips = read_trips(list(paths), bbox, days=days)
    snapped = snap_pickups(graph, trips.lon, trips.lat, trips.dropoff_lon, trips.dropoff_lat)
    out: list[DayRecords] = []
    not_snapped: list[int] = []
    for day in sorted(days):
        t0 = (dt.datetime.combine(day, dt.time()) - _EPOCH).total_seconds()
        t0 += start_minute_of_day * 60.0
        rel = trips.pickup_s - t0
        inside = (rel >= 0) & (rel < hours * 3600.0)
        not_snapped.append(int(np.sum(inside & ~snapped.ok)))
        sel = np.flatnonzero(inside & snapped.ok)
        sel = sel[np.lexsort((sel, rel[sel]))]  # time order, file order among equal times
        # one direction per two-way pickup, drawn once with the snap weights, seeded by the
        # day alone: a day's passengers do not depend on which other days are read
        u = np.random.default_rng([0x5A1D, day.toordinal()]).uniform(0.0, 1.0, sel.shape[0])
        other = (snapped.edge_b[sel] >= 0) & (u >= snapped.weight_a[sel])
        link = np.where(other, snapped.edge_b[sel], snapped.edge_a[sel])
        has_drop = np.isfinite(trips.dropoff_lon[sel]) & np.isfinite(trips.dropoff_lat[sel])
        grid_cell = np.full(sel.shape[0], DRAW, dtype=np.int64)
        if has_drop.any():
            grid_cell[has_drop] = grid.cell_of(
                trips.dropoff_lon[sel][has_drop], trips.dropoff_lat[sel][has_drop]
            )
        out.append(
            DayRecords(
                day=day,
                start_minute_of_week=day.weekday() * 1440 + start_minute_of_day,
                link=link.astype(np.int64),
                t_s=rel[sel],
                fare=trips.fare[sel],
                duration_s=trips.duration_s[sel],
                distance_m=trips.distance_m[sel],
                dropoff_cell=grid_cell,
            )
        )
    return out, not_snapped, trips.files, trips.formats


def load_replay(
    graph: Graph,
    table: DemandTable,
    paths: list[str | os.PathLike[str]],
    days: frozenset[dt.date],
    start_minute_of_day: float,
    hours: float,
) -> Replay:
    """The records of ``paths`` on ``days`` in the shift window ``[start, start + hours)``,
    snapped to ``graph``; and the share that scales the table's rates (module docs), from the
    same files' records on the table's own days (read in the same pass)."""
    bbox = network_bbox(table.grid)
    own = _own_days(table, days)
    per_day, not_snapped, files, formats = _shift_records(
        graph, table.grid, paths, bbox, days | own, start_minute_of_day, hours
    )
    replayed = tuple(r for r in per_day if r.day in days)
    missed = sum(n for r, n in zip(per_day, not_snapped, strict=True) if r.day in days)
    share = planner_share(graph, table, [r for r in per_day if r.day in own], hours)
    inside = in_sample_days(table, days)
    return Replay(files, formats, replayed, missed, tuple(inside or ()), share)


def _own_days(table: DemandTable, days: frozenset[dt.date]) -> frozenset[dt.date]:
    """The table's own days of the day types of ``days``."""
    ranges = table_days(table) or []
    own = {a + dt.timedelta(days=k) for a, b in ranges for k in range((b - a).days + 1)}
    types = {day_type_of_date(d) for d in days}
    return frozenset(d for d in own if day_type_of_date(d) in types)


def planner_share(graph: Graph, table: DemandTable, own: list[DayRecords], hours: float) -> float:
    """Mean records per shift on the table's own days of the replayed days' day types
    (``own``), over the table's expected pickups in that shift; ``1 / scale_factor`` when the
    table's days are unknown or hold none of those day types."""
    fallback = 1.0 / table.scale_factor if table.scale_factor > 0 else 0.0
    counts = [r.count for r in own]
    if not any(counts):
        return fallback
    expected = []
    for r in own:
        minutes = r.start_minute_of_week + np.arange(0.0, hours * 60.0, 1.0)
        expected.append(float(table.rates(graph.edge_id, minutes).sum()) / 60.0)
    return float(np.sum(counts) / max(np.sum(expected), 1e-9))


def replay_passengers(world: World, day: DayRecords, seed: int) -> Passengers:
    """The recorded passengers of ``day`` with this seed's patience and drawn trip values."""
    rng = np.random.default_rng([seed, 0x2E91A7, day.day.toordinal()])
    m = day.count
    order = np.lexsort((np.arange(m), day.t_s, day.link))
    link = day.link[order]
    arrive = day.t_s[order]
    cfg = world.config
    if cfg.matching == "dispatch":
        leave = arrive + cfg.max_wait_s
    else:
        leave = arrive + rng.exponential(cfg.patience_s, m)
    fare, duration, distance, drop, outside = draw_trips(world, link, rng)
    rec_fare = day.fare[order]
    has_fare = np.isfinite(rec_fare)
    if has_fare.any():
        t = world.table
        gid = world.graph.edge_id[link].astype(np.int64)
        ratio = rec_fare / np.maximum(t.fare_mean[gid].astype(np.float64), 0.5)
        fare = np.where(has_fare, rec_fare, fare)
        duration = np.where(has_fare, np.maximum(t.trip_duration_s[gid] * ratio, 60.0), duration)
        distance = np.where(has_fare, t.trip_distance_m[gid] * ratio, distance)
    rec_dur = day.duration_s[order]
    duration = np.where(np.isfinite(rec_dur), np.maximum(rec_dur, 60.0), duration)
    rec_dist = day.distance_m[order]
    distance = np.where(np.isfinite(rec_dist), rec_dist, distance)
    rec_cell = day.dropoff_cell[order]
    known = rec_cell != DRAW
    if known.any():
        d2, o2 = drop_links(world, rec_cell[known], rng)
        drop[known] = d2
        outside[known] = o2
    offsets = np.searchsorted(link, np.arange(world.n + 1)).astype(np.int64)
    pax = Passengers(link, arrive, leave, fare, duration, distance, drop, outside, offsets)
    return walk_out_of_traps(world, pax)
