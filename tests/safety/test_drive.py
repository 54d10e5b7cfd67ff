"""A recorded drive through Midtown (tests/data/midtown_drive.csv, 1 Hz, stop and go) replayed
through the planner on the real TLC demand and the gate: the figures the SLO report gives."""

from __future__ import annotations

import csv
import datetime as dt
import math
from pathlib import Path

import pytest

from models import DemandTable, tick_demand_from_table
from safety import (
    BundleStatus,
    BusinessArea,
    Fix,
    GpsConfig,
    RouteRechecker,
    SafetyGate,
    SloReport,
    TickInput,
    check_fix,
    slo,
)
from tiles import NoMatchError, TileStore, match_fix

planner = pytest.importorskip("agent.planner")

DRIVE = Path(__file__).resolve().parent.parent / "data" / "midtown_drive.csv"
NEW_YORK_SUMMER = dt.timezone(dt.timedelta(hours=-4))
EVERY = 20  # every 20th fix: 74 ticks


def _fixes() -> list[Fix]:
    def num(x: str) -> float | None:
        return float(x) if x else None

    out = []
    with DRIVE.open() as fh:
        for r in csv.DictReader(fh):
            t = dt.datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp()
            out.append(
                Fix(
                    t,
                    float(r["lon"]),
                    float(r["lat"]),
                    num(r["heading"]),
                    num(r["speed"]),
                    num(r["accuracy"]),
                )
            )
    return out


def _replay(store: TileStore, table: DemandTable, *, hold: bool) -> SloReport:
    """Like the agent: match, plan, judge. ``hold``: keep the last moving fix, and match with
    the direction the gate would use (``check_fix(...).heading_deg``)."""
    params = planner.PlannerParams()
    area = BusinessArea.from_bbox(*store.bbox)
    gate = SafetyGate(area=area, locale="en")
    fixes = _fixes()
    last_moving: Fix | None = None
    records = []
    for k in range(1, len(fixes)):
        fx, prev = fixes[k], fixes[k - 1]
        if k % EVERY == 0:
            now = fx.time_s + 0.2
            local = dt.datetime.fromtimestamp(fx.time_s, NEW_YORK_SUMMER)
            mow = local.weekday() * 1440 + local.hour * 60 + local.minute + local.second / 60
            g = store.radius_graph(fx.lon, fx.lat, params.radius_m)
            held = last_moving if hold else None
            heading = check_fix(fx, prev, now, None, GpsConfig(), held).heading_deg
            if not hold:
                heading = fx.heading_deg
            try:
                m = match_fix(g, fx.lon, fx.lat, heading, 2.0 if heading is not None else 0.0)
            except NoMatchError:
                m = None
            demand = tick_demand_from_table(
                table, g.edge_id, math.floor(mow), math.ceil(params.horizon_s / 60)
            )
            plan = None
            if m is not None:
                plan = planner.plan_cruise(
                    g, demand, m.best.edge_id, mow, params, fraction=m.best.fraction
                )
            v = gate.check(
                TickInput(
                    now_s=now,
                    minute_of_week=mow,
                    fix=fx,
                    previous_fix=prev,
                    graph=g,
                    match=m,
                    route=None if plan is None else plan.edges,
                    bundle=BundleStatus(True),
                    demand=demand,
                    demand_table=table,
                    last_moving_fix=held,
                )
            )
            records.append({"kind": "tick", "schema_version": 1, "safety": v.to_record()})
        if fx.heading_deg is not None and (fx.speed_mps or 0.0) >= 2.0:
            last_moving = fx
    return slo(records, RouteRechecker(store))


def test_recorded_midtown_drive(manhattan_store: TileStore, manhattan_demand: Path) -> None:
    table = DemandTable.load(manhattan_demand)
    without = _replay(manhattan_store, table, hold=False)
    held = _replay(manhattan_store, table, hold=True)
    assert without.ticks == held.ticks == 74
    # nothing shown is ever found unsafe on re-check, either way
    assert without.quality == held.quality == 1.0
    assert "INTERNAL_ERROR" not in without.fallbacks_by_reason
    # stop and go: without the held heading, every stop loses guidance
    stops = without.fallbacks_by_reason.get("GPS_NO_HEADING_LOW_SPEED", 0)
    assert stops >= 0.2 * without.ticks
    assert held.fallbacks_by_reason.get("GPS_NO_HEADING_LOW_SPEED", 0) <= 0.05 * held.ticks
    assert held.availability is not None and without.availability is not None
    assert held.availability >= without.availability + 0.2
    assert held.availability >= 0.8
