"""Demand checks against the real statistical DemandTable built from NYC TLC trips."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models import DemandTable, TickDemand, tick_demand_from_table
from safety import DemandCheckConfig, Reason, SafetyGate, check_demand
from tiles import Graph

from .helpers import long_walk, ok_tick

CFG = DemandCheckConfig()


@pytest.fixture(scope="module")
def table(manhattan_demand: Path) -> DemandTable:
    return DemandTable.load(manhattan_demand)


def _around(
    g: Graph, table: DemandTable, minute: int, seed: int = 0
) -> tuple[list[int], TickDemand]:
    route = long_walk(g, np.random.default_rng(seed), 15)
    near = np.flatnonzero(
        np.hypot(
            g.u_lon - g.u_lon[g.local([route[0]])[0]], g.u_lat - g.u_lat[g.local([route[0]])[0]]
        )
        < 0.01
    )
    ids = sorted({*route, *(int(g.edge_id[i]) for i in near)})
    return route, tick_demand_from_table(table, ids, minute, 60)


@pytest.mark.parametrize("minute", [0, 8 * 60 + 15, 2 * 1440 + 18 * 60, 5 * 1440 + 23 * 60 + 50])
def test_real_statistics_are_in_distribution(
    manhattan: Graph, table: DemandTable, minute: int
) -> None:
    assert table.n_edges == manhattan.n_edges_total
    _, d = _around(manhattan, table, minute)
    assert float(d.pickups_per_h.max()) > 0  # real hails around midtown
    assert check_demand(d, table, minute, CFG) == ()


def test_a_model_predicting_ten_times_the_busiest_hour_is_out_of_distribution(
    manhattan: Graph, table: DemandTable
) -> None:
    route, d = _around(manhattan, table, 600)
    # the busiest link of the tick, predicted at 10x its highest rate in any slot of the week
    busiest = int(np.argmax(d.pickups_per_h.max(axis=0)))
    link_max = float(table.pickups_per_h[:, :, d.edge_id[busiest]].max())
    pred = np.array(d.pickups_per_h, copy=True)
    pred[0, busiest] = 10 * link_max
    bad = replace(d, pickups_per_h=pred, source="onnx:test")
    assert check_demand(bad, table, 600, CFG) == (Reason.DEMAND_OUT_OF_DISTRIBUTION,)
    # a model that doubles the statistics is still within the bound
    doubled = replace(d, pickups_per_h=d.pickups_per_h * np.float32(2.0), source="onnx:test")
    assert check_demand(doubled, table, 600, CFG) == ()
    a = int(manhattan.local([route[0]])[0])
    v = SafetyGate().check(ok_tick(manhattan, a, route, demand=bad, table=table))
    assert not v.ok and Reason.DEMAND_OUT_OF_DISTRIBUTION in v.reasons


def test_real_demand_nan_negative_and_missing_slot(manhattan: Graph, table: DemandTable) -> None:
    _, d = _around(manhattan, table, 600)
    nan = np.array(d.pickups_per_h, copy=True)
    nan[-1, -1] = np.nan
    assert Reason.DEMAND_NAN in check_demand(replace(d, pickups_per_h=nan), table, 600, CFG)
    assert Reason.DEMAND_NEGATIVE in check_demand(
        replace(d, trip_duration_s=-d.trip_duration_s - 1), table, 600, CFG
    )
    assert check_demand(d, table, 600 + 120, CFG) == (Reason.DEMAND_SLOT_MISSING,)


def test_the_ood_floors_are_numpys_quantiles_bit_for_bit(table: DemandTable) -> None:
    """The floors are computed without np.quantile (its import of numpy.ma on the first tick,
    issue 20) and equal it on the real table, at the default and other quantiles."""
    from safety.data import _TableStats

    for q in (0.99, 0.5, 0.9, 0.999, 0.0, 1.0):
        s = _TableStats(table, replace(CFG, ood_floor_quantile=q))
        rates = np.asarray(table.pickups_per_h, np.float32)
        fare = np.asarray(table.fare_mean, np.float32)
        dur = np.asarray(table.trip_duration_s, np.float32)
        assert s.floor == float(np.quantile(rates[rates > 0], q))
        assert s.fare_floor == float(np.quantile(fare[fare > 0], q))
        assert s.duration_floor == float(np.quantile(dur[dur > 0], q))
