"""The dispatch-aware pickup term (agent.planner.dispatch) on a small real graph: the catchment
is the fastest-path reach, a request next to the cab's link raises its value, more vacant cabs
in the catchment lower it; and the street-hail plans are byte for byte those of before."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.planner import (
    PlannerParams,
    ValueTable,
    plan_cruise,
    solve,
    speed_factor_from_demand,
)
from agent.planner.core import prepare
from agent.planner.dispatch import assigned_demand, catchment, competitor_share
from models import DemandTable, TickDemand, tick_demand_from_table
from tiles import EdgeRouter, TileStore
from tiles.graph import Graph

TIMES_SQUARE = (-73.98551, 40.75800)
TUESDAY_18H = 1 * 1440 + 18 * 60 + 5
#: sha256 of :func:`hail_plans` as the planner gave it before ``matching`` existed (commit
#: ecf597f): the street-hail plans must not change by a byte
HAIL_PLANS_SHA256 = "e318c6b911c9f766b2c6e7c9bfd81825b9358eda48046b87974e4de45a5952a4"


@pytest.fixture(scope="module")
def world(manhattan_tiles: Path, manhattan_demand: Path) -> Iterator[tuple[Graph, DemandTable]]:
    store = TileStore(manhattan_tiles)
    table = DemandTable.load(manhattan_demand)
    yield store.radius_graph(*TIMES_SQUARE, 700.0), table
    store.close()


def params_of(g: Graph, table: DemandTable, **kw: object) -> PlannerParams:
    sf = speed_factor_from_demand(table, g)
    return PlannerParams(speed_factor=sf, horizon_s=900.0, **kw)  # type: ignore[arg-type]  # kw are fields


def one_request(g: Graph, link: int, rate_h: float) -> TickDemand:
    """Requests on one local link only (the rest of the graph silent), one cell, half the
    trips ending outside."""
    n = g.n
    rates = np.zeros((4, n), dtype=np.float32)
    rates[:, link] = rate_h
    return TickDemand(
        edge_id=g.edge_id.astype(np.int32),
        slot_minute_of_week=np.array([1080, 1110, 1140, 1170], dtype=np.int64) + 1440,
        pickups_per_h=rates,
        fare_mean=np.full(n, 15.0, dtype=np.float32),
        trip_duration_s=np.full(n, 600.0, dtype=np.float32),
        cell=np.zeros(n, dtype=np.int32),
        dropoff=np.array([[0.5, 0.5]], dtype=np.float32),
        source="test:one-request",
    )


def a_link_and_its_successor(g: Graph, params: PlannerParams) -> tuple[int, int]:
    """A cruisable link with a cruisable successor (the request's link), deterministic."""
    prep = prepare(g, params.step_s, params.speed_factor, None)
    for e in range(g.n):
        succ = g.turn_to[g.turn_offsets[e] : g.turn_offsets[e + 1]]
        loc = g.local(succ)
        ok = [int(f) for f in loc if f >= 0 and f != e and prep.cruisable[f]]
        if prep.cruisable[e] and ok:
            return e, ok[0]
    raise AssertionError("no cruisable link with a cruisable successor")


def test_catchment_is_the_fastest_path_reach(world: tuple[Graph, DemandTable]) -> None:
    g, table = world
    params = params_of(g, table, matching="dispatch")
    prep = prepare(g, params.step_s, params.speed_factor, None)
    catch = catchment(prep, 120.0)
    assert catchment(prep, 120.0) is catch  # built once per graph
    router = EdgeRouter(g, prep.tau_s, prep.cruisable)
    for src in (0, g.n // 3, g.n - 1):
        row = slice(catch.within.indptr[src], catch.within.indptr[src + 1])
        js = catch.within.indices[row]
        times = catch.time_s.data[row]
        assert src in js.tolist() and times[js.tolist().index(src)] == 0.0
        others = np.setdiff1d(np.arange(g.n), js)
        costs = router.costs_from(src, np.arange(g.n))
        # inside: the router's cost (to 0.05 ms a link with the CCH); outside: beyond reach
        inside = js != src
        assert np.allclose(times[inside], costs[js[inside]], atol=1e-3)
        assert np.all(times <= 120.0)
        assert np.all(~(costs[others] <= 120.0 - 1e-3))


def test_a_request_next_to_the_cab_raises_its_value(world: tuple[Graph, DemandTable]) -> None:
    g, table = world
    hail = params_of(g, table)
    dispatch = dataclasses.replace(hail, matching="dispatch")
    cab, nxt = a_link_and_its_successor(g, hail)
    quiet = solve(g, one_request(g, nxt, 0.0), TUESDAY_18H, dispatch)
    busy = solve(g, one_request(g, nxt, 20.0), TUESDAY_18H, dispatch)
    hailed = solve(g, one_request(g, nxt, 20.0), TUESDAY_18H, hail)
    # under hail the cab's own link holds no passenger; under dispatch it is sent to the one
    # appearing next to it
    assert hailed.pickup_prob[0, cab] == 0.0
    assert busy.pickup_prob[0, cab] > 0.0 and quiet.pickup_prob[0, cab] == 0.0
    tau = float(busy.prep.tau_s[cab])
    assert busy.pickup_prob[0, cab] == pytest.approx(1 - math.exp(-20.0 * tau / 3600.0), rel=1e-6)
    assert busy.window_s[cab] == 0.0  # no curb wait under dispatch
    # and the value of being there, at every layer
    assert np.all(busy.values[: busy.n_layers, cab] > quiet.values[: quiet.n_layers, cab])
    # the trip it is sent to: the request's fare, after the drive to her and her trip
    d = assigned_demand(busy.prep, one_request(g, nxt, 20.0), 300.0, 0.0)
    i = int(np.flatnonzero(d.edge_id == g.edge_id[cab])[0])
    assert d.fare_mean[i] == pytest.approx(15.0)
    assert 600.0 < d.trip_duration_s[i] <= 600.0 + 300.0


def test_more_vacant_cabs_in_the_catchment_lower_it(world: tuple[Graph, DemandTable]) -> None:
    g, table = world
    params = params_of(g, table, matching="dispatch")
    cab, nxt = a_link_and_its_successor(g, params)
    dem = one_request(g, nxt, 20.0)
    alone = solve(g, dem, TUESDAY_18H, params)
    prep = alone.prep
    catch = catchment(prep, params.dispatch_reach_s)
    row = catch.within.indices[catch.within.indptr[cab] : catch.within.indptr[cab + 1]]
    far = np.setdiff1d(np.arange(g.n), row)
    assert far.size  # the radius graph is larger than one catchment
    crowd = np.zeros(g.n)
    crowd[row] = 60.0  # vacant passes per hour on every link of the cab's catchment
    crowded = solve(g, dem, TUESDAY_18H, params, supply_per_h=crowd)
    elsewhere = np.zeros(g.n)
    elsewhere[far] = 60.0  # the same cabs, outside it
    away = solve(g, dem, TUESDAY_18H, params, supply_per_h=elsewhere)

    def p(t: ValueTable) -> float:
        return float(t.pickup_prob[0, cab])

    assert p(crowded) < p(alone) and p(away) == pytest.approx(p(alone), rel=1e-6)
    cabs = float(np.sum(60.0 * prep.tau_s[row] / 3600.0))
    tau = float(prep.tau_s[cab])
    share = float(competitor_share(np.array([cabs]))[0])
    assert share < 1.0
    assert p(crowded) == pytest.approx(1 - math.exp(-20.0 * share * tau / 3600.0), rel=1e-6)
    assert crowded.values[0, cab] < alone.values[0, cab]


def test_competitor_share_is_the_poisson_mean() -> None:
    # E[1/(1+N)], N ~ Poisson(m), summed directly
    for m in (0.0, 0.3, 2.0, 7.5):
        direct = sum(math.exp(-m) * m**k / math.factorial(k) / (1 + k) for k in range(80))
        assert float(competitor_share(np.array([m]))[0]) == pytest.approx(direct, rel=1e-9)


def hail_plans(g: Graph, table: DemandTable) -> bytes:
    """Plans under street hail from a few links (the default params, then with a supply map
    and recent passes), concatenated."""
    params = PlannerParams(speed_factor=speed_factor_from_demand(table, g))
    demand = tick_demand_from_table(table, g.edge_id, TUESDAY_18H, 47)
    supply = np.linspace(0.0, 20.0, demand.edge_id.shape[0])
    out = b""
    for i, e in enumerate((0, g.n // 2, g.n - 1)):
        gid = int(g.edge_id[e])
        out += plan_cruise(g, demand, gid, TUESDAY_18H + i, params).to_json()
        ages = {int(g.edge_id[(e + 1) % g.n]): 20.0}
        out += plan_cruise(
            g, demand, gid, TUESDAY_18H, params, supply_per_h=supply, last_pass_age_s=ages
        ).to_json()
    return out


def test_hail_plans_are_unchanged_byte_for_byte(world: tuple[Graph, DemandTable]) -> None:
    g, table = world
    plans = hail_plans(g, table)
    assert hashlib.sha256(plans).hexdigest() == HAIL_PLANS_SHA256
    assert b"matching" not in plans and b"dispatch_reach_s" not in plans
    dispatch = PlannerParams(matching="dispatch")
    assert dispatch.to_json()["matching"] == "dispatch"
    assert dispatch.to_json()["dispatch_reach_s"] == 300.0


def test_matching_is_read_from_params_yaml() -> None:
    p = PlannerParams.from_mapping({"matching": "dispatch", "dispatch_reach_s": 240})
    assert p.matching == "dispatch" and p.dispatch_reach_s == 240.0
    with pytest.raises(ValueError, match="matching"):
        PlannerParams.from_mapping({"matching": "telepathy"})
    with pytest.raises(ValueError, match="must be a string"):
        PlannerParams.from_mapping({"matching": 1})
    with pytest.raises(ValueError, match="dispatch_reach_s"):
        PlannerParams(dispatch_reach_s=0.0)


def test_a_bundle_params_yaml_can_say_dispatch(
    manhattan_tiles: Path,
    manhattan_demand: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json
    import shutil

    from tools.cli import main

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.yaml").write_text("schema_version: 1\n")
    shutil.copy(manhattan_tiles, bundle / "tiles.sqlite")
    shutil.copytree(manhattan_demand, bundle / "demand")
    argv = ["cruise", "--bundle-or-tiles", str(bundle), "--at", "-73.98551,40.75800"]
    argv += ["--time", "2015-06-02T18:05", "--json"]
    (bundle / "params.yaml").write_text("planner:\n  horizon_s: 900\n")
    assert main(argv) == 0
    hail = json.loads(capsys.readouterr().out)
    (bundle / "params.yaml").write_text("planner:\n  horizon_s: 900\n  matching: dispatch\n")
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["params"]["matching"] == "dispatch" and doc["params"]["dispatch_reach_s"] == 300
    assert "matching" not in hail["params"]
    assert doc["expected_revenue"] != hail["expected_revenue"]
    # a matching rule the planner does not know: one line, exit 2
    (bundle / "params.yaml").write_text("planner:\n  matching: telepathy\n")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "matching" in err and len(err.strip().splitlines()) == 1
