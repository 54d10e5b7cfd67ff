"""The live snapshot's per-cell pickups feed the cell demand model's recent inputs in decide()
(agent.decide.tick_recent): a real cell model trained small on the Uber month, real snapshots
(sync.live.build_snapshot), replayed bit-exact; odd snapshots are refused to statistics."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.bundle import LoadedBundle, load_bundle
from agent.decide import (
    RECENT_BAD_COUNTS,
    RECENT_FILLED,
    RECENT_FROM_SNAPSHOT,
    RECENT_MIN_EXPECTED,
    RECENT_NO_SNAPSHOT,
    RECENT_NO_UNITS,
    RECENT_OTHER_GRID,
    RECENT_TOO_FEW,
    LiveInput,
    TickInputs,
    TickResult,
    decide,
)
from agent.gps import Fix, read_csv_trace
from models import open_demand, tick_demand_from_table
from models.recent import week_window
from sync.live import PICKUP, MeterEvent, Snapshot, build_snapshot, grid_spec
from tests.conftest import DRIVE_CSV
from tools.field.replay import SnapshotLookup, replay_tick

AREA = "manhattan"
#: the fleet's meter pickups per hail of the demand table, as params.yaml would say
FLEET_PICKUPS_PER_HAIL = 0.05


@pytest.fixture(scope="module")
def cell_bundle(manhattan_bundle: Path, recent_model_dir: Path) -> Any:
    """The Manhattan bundle with the cell model and its table, and the live layer's units."""
    lb = load_bundle(manhattan_bundle)
    table, model = open_demand(recent_model_dir)
    assert model is not None and model.granularity == "cell"  # train_recent_model ships it
    assert table.n_edges == lb.demand.n_edges  # the same road network
    doc = {**lb.params_doc, "live": {"pickups_per_hail": FLEET_PICKUPS_PER_HAIL}}
    yield dataclasses.replace(lb, demand=table, model=model, params_doc=doc)
    lb.close()


def _fix() -> Fix:
    return read_csv_trace(DRIVE_CSV)[150]


def _snapshot(lb: LoadedBundle, f: Fix, busy: float, **kw: Any) -> Snapshot:
    """A real snapshot built 20 s before the tick: every cell of the model's area had its usual
    pickups (the model's expectation, in the fleet's units) over the last hour, the cab's cell
    and its eight neighbours ``busy`` times as many, spread evenly over the hour."""
    model = lb.model
    assert model is not None
    g = lb.demand.grid
    built = int(f.time_s) - 20
    end = math.floor(lb.minute_of_week(float(built)))
    scale = model.pickups_per_hail / FLEET_PICKUPS_PER_HAIL
    usual = week_window(model.exp_week_cum, end, 60)[0] / scale  # per cell, last hour
    here = int(g.cell_of(f.lon, f.lat))
    events: list[MeterEvent] = []
    for c in model.area_cells:
        row, col = divmod(int(c), g.ncols)
        near = abs(row - here // g.ncols) <= 1 and abs(col - here % g.ncols) <= 1
        n = round(usual[c] * (busy if near else 1.0))
        lon = g.min_lon + (col + 0.5) * g.cell_deg_lon
        lat = g.min_lat + (row + 0.5) * g.cell_deg_lat
        events += [
            MeterEvent(PICKUP, built - 1 - (3590 * k) // max(n, 1), lon, lat) for k in range(n)
        ]
    return build_snapshot(
        [],
        float(built),
        area=AREA,
        pickups=events,
        grid=grid_spec(g.to_json()),
        version=7,
        **kw,
    )


def _tick(lb: LoadedBundle, f: Fix, snap: Snapshot | None) -> TickResult:
    live = None if snap is None else LiveInput(AREA, snap, age_s=20.0)
    return decide(lb, TickInputs(f.time_s, f, None, "en", "interval", live=live))


def _near(lb: LoadedBundle, r: TickResult, f: Fix) -> np.ndarray[Any, Any]:
    """Which of the tick's demand links lie in the cab's cell or its neighbours."""
    assert r.demand is not None
    g = lb.demand.grid
    here = int(g.cell_of(f.lon, f.lat))
    cell = lb.demand.edge_cell[r.demand.edge_id].astype(np.int64)
    row, col = cell // g.ncols, cell % g.ncols
    return np.asarray(
        (np.abs(row - here // g.ncols) <= 1) & (np.abs(col - here % g.ncols) <= 1), dtype=bool
    )


def test_snapshot_pickups_raise_demand_where_they_happened(cell_bundle: LoadedBundle) -> None:
    lb, f = cell_bundle, _fix()
    without = _tick(lb, f, None)
    assert without.demand is not None and without.demand.source.startswith("onnx:")
    rec = without.to_record(lb)["recent"]
    assert rec["reason"] == RECENT_NO_SNAPSHOT and rec["used"] == []
    # without recent inputs the model is statistics exactly (its shipped offline answer)
    assert without.graph is not None
    horizon = math.ceil(lb.planner.horizon_s / 60.0)
    mow = math.floor(without.minute_of_week)
    stat = tick_demand_from_table(lb.demand, without.graph.edge_id, mow, horizon)
    np.testing.assert_allclose(without.demand.pickups_per_h, stat.pickups_per_h, rtol=1e-6)
    snap = _snapshot(lb, f, 3.0)
    busy = _tick(lb, f, snap)
    assert busy.demand is not None
    rec = busy.to_record(lb)["recent"]
    assert rec["reason"] == "" and rec["used"] == list(RECENT_FROM_SNAPSHOT)
    assert rec["filled"] == list(RECENT_FILLED) and rec["windows_min"] == [15, 30, 60]
    assert rec["pickups"] == int(snap.pickups[:, 2].sum()) > 0
    assert rec["expected_fleet_pickups_60m"] >= RECENT_MIN_EXPECTED
    near = _near(lb, busy, f)
    assert near.sum() > 20
    hi = busy.demand.pickups_per_h[:, near].sum()
    lo = without.demand.pickups_per_h[:, near].sum()
    assert hi > 1.2 * lo  # three times the usual pickups there: more demand there
    assert busy.to_record(lb)["demand_sha256"] != without.to_record(lb)["demand_sha256"]
    # a quiet hour there (no pickup in those cells, the rest as usual) lowers it
    quiet = _tick(lb, f, _snapshot(lb, f, 0.0))
    assert quiet.demand is not None
    assert quiet.demand.pickups_per_h[:, near].sum() < lo


class _Archive(SnapshotLookup):
    """The snapshots replay finds, held in memory instead of archive folders."""

    def __init__(self, *snaps: Snapshot) -> None:
        super().__init__([])
        self.snaps = {(s.area, s.version, s.sha256): s for s in snaps}

    def _find(self, area: str, version: int, sha256: str) -> Snapshot | None:
        return self.snaps.get((area, version, sha256))


def test_a_tick_with_recent_inputs_replays_bit_exact(cell_bundle: LoadedBundle) -> None:
    lb, f = cell_bundle, _fix()
    snap = dataclasses.replace(_snapshot(lb, f, 3.0), sha256="ab" * 32)
    rec = _tick(lb, f, snap).to_record(lb)
    rec["seq"] = 3
    assert rec["recent"]["used"] and rec["live"]["sha256"] == "ab" * 32
    again = replay_tick(rec, lb, _Archive(snap))
    assert again.identical, again.details
    # replayed with another snapshot under the same name: the demand differs, replay says so
    other = dataclasses.replace(_snapshot(lb, f, 0.5), sha256="ab" * 32)
    diff = replay_tick(rec, lb, _Archive(other))
    assert not diff.identical and "demand_sha256" in diff.differing


@pytest.mark.parametrize(
    ("odd", "reason"),
    [
        ("negative", RECENT_BAD_COUNTS),
        ("shorter window holds more", RECENT_BAD_COUNTS),
        ("cell outside the grid", RECENT_BAD_COUNTS),
        ("counts of another shape", RECENT_BAD_COUNTS),
        ("another grid", RECENT_OTHER_GRID),
        ("no grid", RECENT_OTHER_GRID),
        ("no units in params.yaml", RECENT_NO_UNITS),
        ("a fleet too small to count", RECENT_TOO_FEW),
    ],
)
def test_odd_snapshot_counts_are_refused_to_statistics(
    cell_bundle: LoadedBundle, odd: str, reason: str
) -> None:
    lb, f = cell_bundle, _fix()
    good = _snapshot(lb, f, 3.0)
    assert good.grid is not None and good.cell_ids.size > 9
    p = good.pickups.copy()
    snap = good
    if odd == "negative":
        p[0] = [-5, -5, -5]
        snap = dataclasses.replace(good, pickups=p)
    elif odd == "shorter window holds more":
        p[:, 0] = p[:, 2] + 1
        snap = dataclasses.replace(good, pickups=p)
    elif odd == "cell outside the grid":
        ids = good.cell_ids.copy()
        ids[-1] = lb.demand.grid.n_cells + 3
        snap = dataclasses.replace(good, cell_ids=ids)
    elif odd == "counts of another shape":
        snap = dataclasses.replace(good, pickups=p[:, :2])
    elif odd == "another grid":
        g = list(good.grid)
        g[0] += 0.001
        snap = dataclasses.replace(good, grid=tuple(g))  # type: ignore[arg-type]  # 6 items
    elif odd == "no grid":
        snap = dataclasses.replace(good, grid=None)
    bundle = lb
    if odd == "no units in params.yaml":
        bundle = dataclasses.replace(
            lb, params_doc={k: v for k, v in lb.params_doc.items() if k != "live"}
        )
    elif odd == "a fleet too small to count":  # one fleet pickup for 38 of the model's
        bundle = dataclasses.replace(
            lb, params_doc={**lb.params_doc, "live": {"pickups_per_hail": 0.001}}
        )
    r = _tick(bundle, f, snap)
    rec = r.to_record(bundle)["recent"]
    assert rec["reason"] == reason and rec["used"] == []
    offline = _tick(bundle, f, None)
    assert r.demand is not None and offline.demand is not None
    # asked without recent inputs: the same demand as a cab offline (statistics)
    assert r.to_record(bundle)["demand_sha256"] == offline.to_record(bundle)["demand_sha256"]
    assert r.plan is not None  # guidance goes on
