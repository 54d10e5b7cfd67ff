"""``nagashi simulate --model`` (issue 18): the nagashi policies planning with the recent-demand
cell model (the small one of the models tests, trained on 2014-04-01..23) on the real Manhattan
tiles, with passengers replayed from the held-out 2014-04-24 of the Uber month."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from agent.planner import solve, speed_factor_from_demand
from agent.tick_recent import RECENT_TOO_FEW
from models import DemandTable, RecentCounts
from models.predict import DemandModel
from tests.conftest import TRIPS
from tiles import TileStore
from tools.cli import main
from tools.sim.engine import run_shift
from tools.sim.live import LiveLayer
from tools.sim.nagashi import NagashiLivePolicy
from tools.sim.policies import Allowed, make_policy
from tools.sim.replay import Replay, load_replay, replay_passengers
from tools.sim.sim_model import RECENT_SIM_WARMING, load_sim_model
from tools.sim.world import TRIPS_PER_TAXI_H, SimConfig, World, build_world

UBER = TRIPS["uber_2014_04"]
DAY = dt.date(2014, 4, 24)  # a Thursday, after the model's training days
START_MIN = 16 * 60
HOURS = 1.1  # past the live layer's 60-minute warm-up


@pytest.fixture(scope="module")
def setting(manhattan_tiles: Path, recent_model_dir: Path) -> tuple[World, Replay]:
    """The world of the model's own statistics (the cab's bundle), with the model."""
    table = DemandTable.load(recent_model_dir)
    with TileStore(manhattan_tiles) as store:
        g = store.all()
    replay = load_replay(g, table, [UBER], frozenset({DAY}), START_MIN, HOURS)
    config = SimConfig(
        taxis=4,
        test_taxis=4,
        hours=HOURS,
        start_minute_of_week=replay.days[0].start_minute_of_week,
    )
    sim = load_sim_model(str(recent_model_dir), table, frozenset({DAY}), False)
    world = build_world(g, table, config, speed_factor_from_demand(table, g), replay.share)
    return dataclasses.replace(world, model=sim.with_replay(replay)), replay


def _cells(world: World, link: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The model's cell of each local link's middle (where the live layer places an event)."""
    assert world.model is not None  # the fixture gives it one
    g = world.graph
    return world.model.model.table.grid.cell_of(
        (g.u_lon[link] + g.v_lon[link]) / 2, (g.u_lat[link] + g.v_lat[link]) / 2
    )


def _requests_layer(world: World, replay: Replay, until_s: float) -> LiveLayer:
    """The live layer of a dispatch market that has heard every request of the day until
    ``until_s`` (and a meter pickup for each, which it must not count again)."""
    assert world.model is not None  # the fixture gives it one
    layer = LiveLayer(world, 2, seed=0, grid=world.model.grid, counts="requests")
    day = replay.days[0]
    for t, link in zip(day.t_s.tolist(), day.link.tolist(), strict=True):
        if t < until_s:
            layer.request(t, link)
            layer.pickup(t + 30.0, link, 0)
    layer.tick(until_s, [-1, -1], [False, False], [(), ()])
    return layer


def test_offline_the_model_plans_exactly_as_statistics(setting: tuple[World, Replay]) -> None:
    world, replay = setting
    for k in range(0, 240, 37):
        minute = world.minute_at(k * 60.0)
        stat = world.tick_demand(minute, 1.0)
        model = world.tick_demand(minute, 1.0, model=True)  # recent=None: a cab offline
        assert model.source.startswith("onnx:") and stat.source.startswith("statistical:")
        assert np.array_equal(model.pickups_per_h, stat.pickups_per_h)
    a = solve(world.graph, stat, minute, world.params)
    b = solve(world.graph, model, minute, world.params)
    assert np.array_equal(a.values, b.values)
    # whole shifts (in the first hour the live layer is warming up: no recent inputs either)
    short = dataclasses.replace(world, config=dataclasses.replace(world.config, hours=0.2))
    pax = replay_passengers(short, replay.days[0], 3)
    for stat_name in ("nagashi-offline", "nagashi-live"):
        r0 = run_shift(short, pax, stat_name, 3, 1.0)
        r1 = run_shift(short, pax, f"{stat_name}+model", 3, 1.0)
        assert r0.served > 0 and r0.metrics() == r1.metrics()
        assert r1.policy_stats["solves_with_recent"] == 0
        reasons = set(r1.policy_stats["readouts_by_recent"])
        if stat_name == "nagashi-offline":
            assert reasons == {"RECENT_NO_SNAPSHOT"}  # offline: never a snapshot
        else:
            assert RECENT_SIM_WARMING in reasons <= {"RECENT_NO_SNAPSHOT", RECENT_SIM_WARMING}


def test_dispatch_counts_every_request_once_at_scale_one(setting: tuple[World, Replay]) -> None:
    world, replay = setting
    sim = world.model
    assert sim is not None and sim.source_units == 1.0  # Uber records replayed: its source
    until = 3900.0
    layer = _requests_layer(world, replay, until)
    snap = layer.snapshots[-1][1]
    # the snapshot's counts per cell: the requests of the last 15/30/60 minutes, once each
    day = replay.days[0]
    t = day.t_s[day.t_s < until]
    link = day.link[day.t_s < until]
    cell = _cells(world, link)
    age = int(until) - t.astype(np.int64)  # the meter event's whole seconds
    for j, w in enumerate((15, 30, 60)):
        want = np.bincount(cell[(cell >= 0) & (age <= w * 60)], minlength=1)
        got = np.zeros(max(want.size, int(snap.cell_ids.max()) + 1), dtype=np.int64)
        got[snap.cell_ids] = snap.pickups[:, j]
        assert np.array_equal(got[: want.size], want) and not got[want.size :].any()
    assert int(snap.pickups[:, 2].sum()) > 100
    # the model gets them as they are: one request is one pickup of its source
    units = sim.live_pickups_per_hail(world, "requests", 2)
    assert units == sim.pickups_per_hail
    lb = sim.bundle(world, units)
    recent, rec = sim.recent(lb, world, snap)
    assert isinstance(recent, RecentCounts), rec
    assert rec["scale"] == 1.0 and rec["reason"] == ""
    assert recent.end_minute_of_week == math.floor(world.minute_at(until))
    per_cell = np.zeros((sim.model.table.grid.n_cells, 3))
    per_cell[snap.cell_ids] = snap.pickups
    assert np.array_equal(recent.counts, per_cell)
    # and the tick is the cab's: DemandModel.tick on the same recent inputs, at the
    # simulated market's rates
    minute = math.floor(world.minute_at(until + 20.0))
    tick = world.tick_demand(minute, 1.0, model=True, recent=recent)
    horizon = math.ceil(world.params.horizon_s / 60.0) + 1
    cab = DemandModel(sim.directory).tick(world.graph.edge_id, minute, horizon, recent)
    np.testing.assert_allclose(
        tick.pickups_per_h, cab.pickups_per_h * np.float32(world.share), rtol=1e-5
    )
    stat = world.tick_demand(minute, 1.0)
    assert not np.allclose(tick.pickups_per_h, stat.pickups_per_h, rtol=1e-3)
    # before the live layer has run for an hour its counts miss the time before the shift
    early = _requests_layer(world, replay, 1800.0).snapshots[-1][1]
    none, why = sim.recent(lb, world, early)
    assert none is None and why["reason"] == RECENT_SIM_WARMING


def test_hail_meter_pickups_in_a_fleet_s_units(setting: tuple[World, Replay]) -> None:
    """Under hail the server sees only its cabs' meter pickups: n cabs at the TLC's trips per
    cab-hour of the table's hails; a fleet of 4 sees too few for the model (RECENT_TOO_FEW)."""
    world, replay = setting
    sim = world.model
    assert sim is not None
    units = sim.live_pickups_per_hail(world, "pickups", 4)
    assert units == pytest.approx(4 * TRIPS_PER_TAXI_H / world.observed_area_rate_h, rel=1e-12)
    layer = LiveLayer(world, 4, seed=0, grid=sim.grid, counts="pickups")
    day = replay.days[0]
    for t, link in zip(day.t_s.tolist(), day.link.tolist(), strict=True):
        layer.request(t, link)  # not heard under hail
        if t < 3900.0:
            layer.pickup(t, link, 0)
    layer.tick(3900.0, [-1] * 4, [False] * 4, [()] * 4)
    snap = layer.snapshots[-1][1]
    early = day.t_s < 3900.0
    age = 3900 - day.t_s[early].astype(np.int64)
    heard = (_cells(world, day.link[early]) >= 0) & (age <= 3600)
    assert int(snap.pickups[:, 2].sum()) == int(np.count_nonzero(heard)) > 0  # pickups only
    recent, rec = sim.recent(sim.bundle(world, units), world, snap)
    assert recent is None and rec["reason"] == RECENT_TOO_FEW
    assert rec["expected_fleet_pickups_60m"] < 10.0 or sim.pickups_per_hail / units > 4.0


def test_live_model_shares_one_solve_per_snapshot(setting: tuple[World, Replay]) -> None:
    """Under dispatch, the cabs that had the same snapshot at the tick read their routes from
    one table, solved with its recent inputs (the offline one stays the shared table)."""
    world, replay = setting
    w = dataclasses.replace(world, config=dataclasses.replace(world.config, matching="dispatch"))
    policy = make_policy("nagashi-live+model", w, Allowed(w), 5, 1.0, n_cabs=2)
    assert isinstance(policy, NagashiLivePolicy)
    until = 3900.0
    policy.live = _requests_layer(w, replay, until)  # one snapshot, built at ``until``
    t0 = until + 30.0  # both cabs have fetched it (their delays are under 30 s)
    policy.table = policy._solve(t0, None)  # type: ignore[arg-type]  # the live solve reads no Fleet
    policy.t0 = t0
    a = policy._base_table(0, count=True)
    b = policy._base_table(1, count=True)
    assert a is b and a is not policy.table
    st = policy.stats()
    assert st["readouts_by_recent"] == {"used": 2} and st["solves_with_recent"] == 1
    assert st["live_counts"] == "requests"
    # the table is the planner's on the model's demand with the snapshot's recent inputs
    sim = w.model
    assert sim is not None
    recent, _ = sim.recent(policy._lb, w, policy.live.snapshots[-1][1])
    minute = w.minute_at(t0)
    demand = w.tick_demand(minute, 1.0, model=True, recent=recent)
    want = solve(w.graph, demand, minute, w.params, supply_per_h=policy._supply_t0)
    assert np.array_equal(a.values, want.values)
    assert not np.array_equal(a.values, policy.table.values)


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_refuses_a_model_trained_on_a_replayed_day(
    manhattan_tiles: Path,
    recent_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = [
        "simulate",
        "--tiles",
        str(manhattan_tiles),
        "--demand",
        str(recent_model_dir),  # statistics of 04-01..04-23: 04-24 is held out for them
        "--passengers",
        str(UBER),
        "--days",
        DAY.isoformat(),
        "--start",
        f"{DAY.isoformat()}T16:00",
        "--hours",
        "0.1",
        "--seeds",
        "1",
        "--taxis",
        "2",
        "--policy",
        "nagashi-live",
        "--json",
    ]
    # the same model, said to have been trained on 04-24 too
    leaky = tmp_path / "leaky"
    shutil.copytree(recent_model_dir, leaky)
    doc = json.loads((leaky / "model.json").read_text())
    doc["training"]["train_days"] = [*doc["training"]["train_days"], DAY.isoformat()]
    (leaky / "model.json").write_text(json.dumps(doc))
    rc, out, err = _cli([*base, "--model", str(leaky)], capsys)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "refusing to replay 2014-04-24" in err and "model" in err
    assert "Traceback" not in err
    # a model that does not say what it was trained on cannot be checked
    del doc["training"]["train_days"]
    (leaky / "model.json").write_text(json.dumps(doc))
    rc, out, err = _cli([*base, "--model", str(leaky)], capsys)
    assert rc == 2 and err.count("\n") == 1 and "training days" in err
    # a +model policy without a model; a model without replayed passengers
    rc, _, err = _cli([*base, "--policy", "nagashi-live+model"], capsys)
    assert rc == 2 and "needs --model" in err and err.count("\n") == 1
    synthetic = base[: base.index("--passengers")] + base[base.index("--start") :]
    rc, _, err = _cli([*synthetic, "--model", str(recent_model_dir)], capsys)
    assert rc == 2 and "--model needs --passengers" in err and err.count("\n") == 1
