"""The supply prior from the fleet's own trip logs (``nagashi fleet supply``).

Every tick record carries the cab's matched link (``match.edge_id``), its time (``time_s``, UNIX
seconds, and ``minute_of_week``, local time of the area) and what the driver was shown
(``instruction``). The tick record does **not** carry the taximeter; the ``meter`` records of
the same run do (``occupied`` true/false, from ``POST /v1/meter``). So a tick counts as vacant
when the meter of its run was off at that time (off before the first event); a run with no
meter record at all is judged by its guidance instead: its ticks with a ``route`` instruction
(cruising guidance) count as vacant, the others (fallback, waiting) as not.

Passes are counted as the agent counts its own (``agent.runtime``, ``last_pass_age_s``): at each
vacant tick the matched link and, when the cab is still on the route it was shown at the tick
before, the links of that route it drove since. One pass per (cab, link) visit: ticks that stay
on the same link add nothing; an occupied tick or a tick without a match ends the visit.

The rate of a slot is its passes divided by the time the fleet was observed in it: the union,
over every cab, of the time from each tick to the next (at most :data:`MAX_TICK_GAP_S`; the
last tick of a run covers one plan interval), split into the 336 half-hour slots of the week in
local time. Hours when no cab of the logs was running are unobserved (rate 0, days 0), not
hours of an empty road.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.triplog import RECORD_KINDS, ReadReport, read_records
from models.supply import MINUTES_PER_WEEK, SLOTS_PER_WEEK, SupplyTable
from tiles import TileStore
from tools.errors import ToolsError
from tools.field.logpaths import trip_log_paths

#: a tick covers the time to the next tick of its run, at most this long (a gap is unobserved)
MAX_TICK_GAP_S = 60.0
#: what the last tick of a run covers when its start record gives no plan interval
DEFAULT_PLAN_INTERVAL_S = 5.0
SLOT_MIN = MINUTES_PER_WEEK // SLOTS_PER_WEEK
#: 1970-01-01 00:00 UTC was a Thursday
EPOCH_MINUTE_OF_WEEK = 3 * 1440


@dataclass
class _Tick:
    time_s: float
    local_min: float  # local minutes since a Monday 00:00 (local_min mod a week = minute of week)
    edge: int | None  # matched link, None when the tick had no match
    route: tuple[int, ...]  # the route shown after this tick ((), unless kind "route")
    guidance: bool  # a "route" instruction: cruising guidance
    network: str | None  # the bundle's road network source_sha256


@dataclass
class _Run:
    vehicle: str = ""
    plan_interval_s: float = DEFAULT_PLAN_INTERVAL_S
    ticks: list[tuple[int, _Tick]] = field(default_factory=list)  # (seq, tick)
    meters: list[tuple[float, bool]] = field(default_factory=list)  # (time_s, occupied)


@dataclass
class _Tally:
    """What the runs of the logs add up to: passes, observed time, counts."""

    pass_edges: list[int] = field(default_factory=list)
    pass_minutes: list[float] = field(default_factory=list)  # local minutes of each pass
    starts: list[float] = field(default_factory=list)  # each tick's observed span (local min)
    ends: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(
        default_factory=lambda: {"ticks": 0, "vacant_ticks": 0, "ticks_without_match": 0}
    )
    vacancy: dict[str, int] = field(default_factory=lambda: {"meter": 0, "guidance": 0})
    vehicles: set[str] = field(default_factory=set)
    first_s: float = math.inf
    last_s: float = -math.inf

    def add_run(self, run_id: str, run: _Run, network: str | None, n_edges: int) -> None:
        """Count the passes and the observed time of one run (with at least one tick)."""
        ticks = [t for _, t in sorted(run.ticks, key=lambda st: (st[1].time_s, st[0]))]
        self.vehicles.add(run.vehicle or f"run:{run_id}")
        _check_ticks(run_id, ticks, network, n_edges)
        times = np.array([t.time_s for t in ticks])
        if run.meters:
            self.vacancy["meter"] += 1
            vacant = ~_occupied_at(run.meters, times)
        else:
            self.vacancy["guidance"] += 1
            vacant = np.array([t.guidance for t in ticks], dtype=bool)
        self._add_passes(ticks, vacant)
        gaps = np.minimum(np.diff(times, append=times[-1] + run.plan_interval_s), MAX_TICK_GAP_S)
        local = np.array([t.local_min for t in ticks])
        self.starts.extend(local.tolist())
        self.ends.extend((local + np.maximum(gaps, 0.0) / 60.0).tolist())
        self.first_s = min(self.first_s, float(times[0]))
        self.last_s = max(self.last_s, float(times[-1]))

    def _add_passes(self, ticks: list[_Tick], vacant: npt.NDArray[np.bool_]) -> None:
        """One pass per (cab, link) visit at vacant ticks (see the module docstring)."""
        counts = self.counts
        prev_edge: int | None = None
        prev_route: tuple[int, ...] = ()
        for t, free in zip(ticks, vacant, strict=True):
            counts["ticks"] += 1
            if t.edge is None:
                counts["ticks_without_match"] += 1
                prev_edge, prev_route = None, t.route
                continue
            if not free:
                prev_edge, prev_route = None, t.route
                continue
            counts["vacant_ticks"] += 1
            passed: list[int] = []
            if t.edge in prev_route:  # still on the route shown: its links before this one
                passed = [e for e in prev_route[: prev_route.index(t.edge)] if e != prev_edge]
            if t.edge != prev_edge:
                passed.append(t.edge)
            self.pass_edges.extend(passed)
            self.pass_minutes.extend([t.local_min] * len(passed))
            prev_edge, prev_route = t.edge, t.route


def _check_ticks(run_id: str, ticks: list[_Tick], network: str | None, n_edges: int) -> None:
    """Refuse logs made on another road network than ``tiles``."""
    for t in ticks:
        if t.network is not None and network is not None and t.network != network:
            raise ToolsError(
                f"the logs of run {run_id} were made on road network {t.network[:12]}, "
                f"the tiles are {network[:12]}: give the tiles of the logs' bundle"
            )
        if t.edge is not None and not 0 <= t.edge < n_edges:
            raise ToolsError(
                f"run {run_id} matched link {t.edge}, which the tiles ({n_edges} links) "
                "do not have: give the tiles of the logs' bundle"
            )


def build_supply(
    logs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    tiles: str | os.PathLike[str],
    cabs: int | None = None,
) -> tuple[SupplyTable, dict[str, Any]]:
    """The supply table of the trip logs ``logs`` (files or folders) on the network ``tiles``
    (a tile database or a bundle), and a summary. ``cabs``: write it for a fleet of that many
    cabs (``SupplyTable.scaled``) instead of the number of vehicles in the logs."""
    if cabs is not None and cabs < 1:
        raise ToolsError(f"--cabs must be at least 1, not {cabs}")
    with TileStore(tiles) as store:
        n_edges = store.n_edges_total
        network = store.meta.get("source_sha256")
    paths = trip_log_paths(logs)
    read = ReadReport()
    runs, kinds, untimed = _read_runs(paths, read)
    names = ", ".join(str(p) for p in paths)
    if not kinds & RECORD_KINDS:
        raise ToolsError(f"no trip-log records in {names}: is it a nagashi trip log?")
    if not any(r.ticks for r in runs.values()):
        raise ToolsError(f"no tick records in {names}: nothing to measure supply from")
    tally = _Tally()
    for run_id, run in runs.items():
        if run.ticks:
            tally.add_run(run_id, run, network, n_edges)
    observed_min = _observed_minutes_per_slot(np.array(tally.starts), np.array(tally.ends))
    meta: dict[str, Any] = {
        "source": "trip logs",
        "days": round(float(observed_min.sum()) / 1440.0, 6),
        "network_sha256": network,
        "from_utc": _iso(tally.first_s),
        "to_utc": _iso(tally.last_s),
        "runs": sum(1 for r in runs.values() if r.ticks),
        "vehicles": len(tally.vehicles),
        "vacancy_from": tally.vacancy,
        **tally.counts,
        "ticks_without_time": untimed,
        "torn_tails": len(read.torn_tails),
    }
    return _table(tally, observed_min, meta, cabs)


def _table(
    tally: _Tally, observed_min: npt.NDArray[np.float64], meta: dict[str, Any], cabs: int | None
) -> tuple[SupplyTable, dict[str, Any]]:
    """The table of ``tally``'s passes over the minutes observed per slot, for ``cabs`` cabs
    (default: the vehicles measured), and the summary."""
    days = observed_min / SLOT_MIN
    measured = len(tally.vehicles)
    edges = np.array(tally.pass_edges, dtype=np.int64)
    # the middle of each pass's slot, computed as the observed time is split into slots
    slot = np.floor(np.array(tally.pass_minutes, dtype=np.float64) / SLOT_MIN) % SLOTS_PER_WEEK
    minutes = slot * SLOT_MIN + SLOT_MIN / 2
    table = SupplyTable.from_passes(edges, minutes, days_per_slot=days, cabs=measured, meta=meta)
    if cabs is not None and cabs != measured:
        table = table.scaled(cabs)
    summary = {
        "passes": int(edges.size),
        "links": int(table.edge_id.size),
        "cabs": table.cabs,
        "version": table.version,
        "measured_cabs": measured,
        "observed_slots": int(np.count_nonzero(days)),
        **{k: v for k, v in meta.items() if k not in {"source"}},
    }
    return table, summary


def _read_runs(paths: list[Path], read: ReadReport) -> tuple[dict[str, _Run], set[str], int]:
    """The few fields supply needs of every record, grouped by run (records are streamed: a
    fleet's logs are not held in memory); the kinds seen and the ticks without a usable time."""
    runs: dict[str, _Run] = {}
    kinds: set[str] = set()
    untimed = 0
    for r in read_records(paths, read):
        kind = r.get("kind")
        if not isinstance(kind, str):
            continue
        kinds.add(kind)
        run = runs.setdefault(str(r.get("run_id") or "unknown"), _Run())
        if not run.vehicle and isinstance(r.get("vehicle_id"), str):
            run.vehicle = r["vehicle_id"]
        if kind == "start":
            interval = (r.get("config") or {}).get("plan_interval_s")
            if isinstance(interval, int | float) and interval > 0:
                run.plan_interval_s = float(interval)
        elif kind == "meter" and isinstance(r.get("occupied"), bool):
            run.meters.append((float(r["time_s"]), bool(r["occupied"])))
        elif kind == "tick":
            tick = _tick(r)
            if tick is None:
                untimed += 1
            else:
                run.ticks.append((int(r.get("seq", 0)), tick))
    return runs, kinds, untimed


def _tick(r: dict[str, Any]) -> _Tick | None:
    """The fields of one tick record; None for a tick without a time (nothing to slot)."""
    t, mow = r.get("time_s"), r.get("minute_of_week")
    if not isinstance(t, int | float) or not isinstance(mow, int | float):
        return None
    if not (math.isfinite(t) and math.isfinite(mow)):
        return None
    # the area's UTC offset (minutes) from the tick's own local minute of week; the UNIX epoch
    # was a Thursday, minute 3 x 1440 of its week
    utc_offset = (float(mow) - float(t) / 60.0 - EPOCH_MINUTE_OF_WEEK) % MINUTES_PER_WEEK
    if utc_offset > MINUTES_PER_WEEK / 2:
        utc_offset -= MINUTES_PER_WEEK
    offset = EPOCH_MINUTE_OF_WEEK + utc_offset
    match = r.get("match")
    edge = match.get("edge_id") if isinstance(match, dict) else None
    ins = r.get("instruction")
    guidance = isinstance(ins, dict) and ins.get("kind") == "route"
    route = ins.get("route_edges") if isinstance(ins, dict) and guidance else None
    manifest = (r.get("bundle") or {}).get("manifest") if isinstance(r.get("bundle"), dict) else {}
    net = (manifest or {}).get("road_network", {}).get("source_sha256")
    return _Tick(
        time_s=float(t),
        local_min=float(t) / 60.0 + offset,
        edge=int(edge) if isinstance(edge, int) else None,
        route=tuple(int(e) for e in route) if isinstance(route, list) else (),
        guidance=guidance,
        network=net if isinstance(net, str) else None,
    )


def _occupied_at(meters: list[tuple[float, bool]], times: npt.NDArray[np.float64]) -> Any:
    """The meter state at each time (off before the first event)."""
    out = np.zeros(times.shape, dtype=bool)
    for t, occ in sorted(meters):
        out[times >= t] = occ
    return out


def _observed_minutes_per_slot(
    starts: npt.NDArray[np.float64], ends: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Minutes of the union of the intervals [start, end) (local minutes, as _Tick) in
    each of the 336 slots of the week, summed over the weeks."""
    out = np.zeros(SLOTS_PER_WEEK)
    if starts.size == 0:
        return out
    order = np.argsort(starts, kind="stable")
    a, b = starts[order], ends[order]
    reach = np.maximum.accumulate(b)
    new = np.ones(a.size, dtype=bool)
    new[1:] = a[1:] > reach[:-1]  # an interval starting past everything before starts a block
    block = np.cumsum(new) - 1
    lo = a[new]
    hi = np.zeros(lo.size)
    np.maximum.at(hi, block, b)
    lengths = hi - lo
    before = np.concatenate([[0.0], np.cumsum(lengths)])

    def covered_below(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        i = np.searchsorted(lo, x, side="right") - 1
        inside = np.clip(x - lo[np.maximum(i, 0)], 0.0, lengths[np.maximum(i, 0)])
        return np.where(i < 0, 0.0, before[np.maximum(i, 0)] + inside)

    first = math.floor(lo[0] / SLOT_MIN)
    last = math.floor(hi.max() / SLOT_MIN)
    k = np.arange(first, last + 1, dtype=np.int64)
    minutes = covered_below((k + 1) * SLOT_MIN * 1.0) - covered_below(k * SLOT_MIN * 1.0)
    np.add.at(out, k % SLOTS_PER_WEEK, minutes)
    return out


def _iso(t: float) -> str | None:
    if not math.isfinite(t):
        return None
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
