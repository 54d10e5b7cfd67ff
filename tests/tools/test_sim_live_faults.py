"""The live layer's faults in the simulator (tools.sim.live, ``simulate --live-loss P
--live-outage START..END``): lost heartbeats and fetches, seeded per run; an outage after which
the cabs' snapshots expire as the agent's do and they plan offline; what was lost in the JSON."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.planner import Spread
from sync.live import LiveClientConfig
from tests.tools.test_simulate import world  # noqa: F401  (the module fixture)
from tools.cli import main
from tools.sim.live import HEARTBEAT_S, SNAPSHOT_S, LiveLayer
from tools.sim.policies import Allowed, NagashiLivePolicy, make_policy
from tools.sim.runs import run_seeds
from tools.sim.world import SimConfig, World

#: when a snapshot built at ``b`` stops being used: its expiry plus the clock-skew allowance
LIFE_S = 180.0 + LiveClientConfig().skew_s


def _faulty(w: World, **over: Any) -> World:
    return dataclasses.replace(w, config=dataclasses.replace(w.config, **over))


def _drive(live: LiveLayer, w: World, until_s: float) -> None:
    """Heartbeats every 15 s up to ``until_s`` (inclusive) of cabs standing vacant on
    cruisable links, each reporting its link's first successor as its route."""
    links = [int(x) for x in np.flatnonzero(w.cruisable)[: live.n_cabs]]
    routes = [[int(w.succ[e][0])] if w.succ[e] else [] for e in links]
    for k in range(int(until_s // HEARTBEAT_S) + 1):
        live.tick(k * HEARTBEAT_S, links, [True] * live.n_cabs, routes)


def test_no_faults_draw_nothing_and_count_nothing(world: World) -> None:  # noqa: F811
    live = LiveLayer(world, 4, seed=2)
    assert not live.faults
    _drive(live, world, 120.0)
    state = live._loss_rng.bit_generator.state
    assert live.stats() == dict.fromkeys(live.stats(), 0)
    assert all(hb is not None and hb.t_s == 120 for hb in live.latest)  # every one taken
    assert live._loss_rng.bit_generator.state == state


def test_loss_drops_heartbeats_and_fetches_the_same_way_per_seed(
    world: World,  # noqa: F811
) -> None:
    w = _faulty(world, live_loss=0.3)
    live = LiveLayer(w, 20, seed=4)
    _drive(live, w, 600.0)
    st = live.stats()
    ticks, builds = 41, 21  # heartbeats at 0, 15, ..., 600; snapshots at 0, 30, ..., 600
    assert st["heartbeats"] == 20 * ticks and st["fetches"] == 20 * builds
    # about 30 % of each lost (binomial: 246 and 126 expected; far outside 4 sigma fails)
    assert 180 < st["heartbeats_lost"] < 312 and 80 < st["fetches_lost"] < 172
    # a lost heartbeat is not taken: the server keeps the cab's previous one
    ages = [600 - hb.t_s for hb in live.latest if hb is not None]
    assert len(ages) == 20 and max(ages) > 0 and min(ages) == 0
    # the snapshot counts a cab on its link only while its heartbeat is at most 45 s old
    snap = live.snapshots[-1][1]
    assert snap.vacant_cabs == sum(a <= 45 for a in ages)
    # a lost fetch leaves the cab with the snapshot before
    lost = live._lost[-1]
    assert lost is not None
    after = 600.0 + SNAPSHOT_S - 1e-6  # every cab's fetch of the last one is done
    for cab in range(20):
        seen = live.seen_by(cab, after)[0]
        assert seen is not None
        assert (seen.version == snap.version) == (not lost[cab])
    # seeded per run: the same seed loses the same ones, another seed others
    again = LiveLayer(w, 20, seed=4)
    _drive(again, w, 600.0)
    assert again.stats() == st and again.latest == live.latest
    other = LiveLayer(w, 20, seed=5)
    _drive(other, w, 600.0)
    assert other.latest != live.latest


def test_an_outage_takes_nothing_and_cabs_go_offline_after_expiry(
    world: World,  # noqa: F811
) -> None:
    w = _faulty(world, live_outage_min=(2.0, 12.0))  # down over [120 s, 720 s)
    live = LiveLayer(w, 3, seed=1)
    _drive(live, w, 660.0)
    built = [b for b, _, _ in live.snapshots]
    assert built[-1] == 90.0  # the last snapshot before the outage
    st = live.stats()
    assert st["snapshots_outage"] == len(range(120, 661, 30))
    assert st["heartbeats_outage"] == 3 * len(range(120, 661, 15))
    assert all(hb is not None and hb.t_s == 105 for hb in live.latest)
    for cab in range(3):
        # the cab keeps its snapshot until it expires (as the agent's client), then has none
        seen = live.seen_by(cab, 90.0 + LIFE_S)[0]
        assert seen is not None and seen.built_s == 90.0
        assert live.seen_by(cab, 90.0 + LIFE_S + 1.0) == (None, -1, ())
    assert live.fleet_snapshot(90.0 + LIFE_S) is not None
    assert live.fleet_snapshot(90.0 + LIFE_S + 1.0) is None  # the shared table: offline
    # offline: every cab at 0 s (nothing built yet), at 15 s those fetching later, and from
    # the first tick after the snapshot of 90 s expired
    late = int(np.count_nonzero(live.delay_s > 15.0))
    assert st["cab_ticks_offline"] == 3 + late + 3 * len(range(345, 661, 15))
    # the server back: heartbeats taken, a snapshot at 720 s, each cab has it after its delay
    _drive_from(live, w, 675.0, 735.0)
    assert live.snapshots[-1][0] == 720.0
    assert all(hb is not None and hb.t_s == 735 for hb in live.latest)
    for cab in range(3):
        seen = live.seen_by(cab, 720.0 + float(live.delay_s[cab]))[0]
        assert seen is not None and seen.built_s == 720.0


def _drive_from(live: LiveLayer, w: World, from_s: float, until_s: float) -> None:
    links = [int(x) for x in np.flatnonzero(w.cruisable)[: live.n_cabs]]
    t = from_s
    while t <= until_s:
        live.tick(t, links, [True] * live.n_cabs, [[] for _ in links])
        t += HEARTBEAT_S


def test_pickups_wait_for_a_heartbeat_taken_and_expire_after_an_hour(
    world: World,  # noqa: F811
) -> None:
    link = int(np.flatnonzero(world.cruisable)[0])
    w = _faulty(world, live_outage_min=(1.0, 70.0))
    live = LiveLayer(w, 2, seed=3)
    live.tick(0.0, [link, link], [True, True], [[], []])
    live.pickup(10.0, link, 0)  # taken with the heartbeat at 15 s
    live.tick(15.0, [link, link], [True, True], [[], []])
    assert [e.t_s for e in live.pickups] == [10]
    t = 30.0
    while t < 4200.0:  # the server is down from 60 s to 4200 s
        live.tick(t, [link, link], [True, True], [[], []])
        if t == 90.0:
            live.pickup(100.0, link, 1)
        if t == 3990.0:
            live.pickup(4000.0, link, 0)
        t += HEARTBEAT_S
    assert [e.t_s for e in live.pickups] == [10]  # nothing taken while down
    live.tick(4200.0, [link, link], [True, True], [[], []])
    # back: the one of the last hour is taken, the one from before it dropped and counted
    # (and the snapshot built then keeps the last hour's: the one of 10 s is gone)
    assert [e.t_s for e in live.pickups] == [4000]
    assert live.stats()["events_expired"] == 1


def test_runs_with_faults_repeat_whatever_runs_them(world: World) -> None:  # noqa: F811
    w = _faulty(world, test_taxis=8, hours=0.5, live_loss=0.3, live_outage_min=(5.0, 20.0))
    alone = run_seeds(w, ["nagashi-live"], [1], 10.0)["nagashi-live"][0]
    both = run_seeds(w, ["nagashi-live"], [0, 1], 10.0, jobs=2)["nagashi-live"]
    assert both[1].metrics() == alone.metrics()
    assert both[1].policy_stats == alone.policy_stats
    st = alone.policy_stats["live_faults"]
    assert st["heartbeats_lost"] > 0 and st["fetches_lost"] > 0
    assert st["heartbeats_outage"] == 8 * len(range(300, 1200, 15))
    # offline: every cab after its snapshot expired in the outage, a few lost fetches besides
    assert st["cab_ticks_offline"] >= 8 * len(range(300 + int(LIFE_S), 1200, 15))
    assert st != both[0].policy_stats["live_faults"]  # another seed, other losses


def test_an_expired_snapshot_is_none_to_the_read_out(world: World) -> None:  # noqa: F811
    """With the world's spread margin a cab whose snapshot has expired spreads (offline), as
    one that never had one."""
    w = _faulty(world, test_taxis=4, live_outage_min=(1.0, 30.0))
    w = dataclasses.replace(w, params=dataclasses.replace(w.params, route_spread_eps=0.05))
    pol = make_policy("nagashi-live", w, Allowed(w), 0, 10.0, n_cabs=4)
    assert isinstance(pol, NagashiLivePolicy) and pol.live is not None
    _drive(pol.live, w, 45.0)
    t_fresh = 30.0 + SNAPSHOT_S  # every cab has fetched the snapshot of 30 s
    assert all(pol._spread_for(c, t_fresh) is None for c in range(4))
    later = 30.0 + LIFE_S + 1.0  # it has expired: none, offline
    assert all(isinstance(pol._spread_for(c, later), Spread) for c in range(4))


def test_simulate_options_reach_the_json_and_bad_values_exit_2(
    manhattan_tiles: Path,
    manhattan_demand: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = [
        "simulate",
        "--tiles",
        str(manhattan_tiles),
        "--demand",
        str(manhattan_demand),
        "--policy",
        "nagashi-live",
        "--taxis",
        "6",
        "--test-taxis",
        "3",
        "--hours",
        "0.25",
        "--seeds",
        "1",
        "--json",
    ]
    for bad in (["--live-loss", "1.5"], ["--live-outage", "60"], ["--live-outage", "9..3"]):
        assert main([*base, *bad]) == 2
        out = capsys.readouterr()
        assert out.out == "" and out.err.count("\n") == 1 and "live" in out.err
    assert main([*base, "--live-loss", "0.2", "--live-outage", "5..10"]) == 0
    doc = json.loads(capsys.readouterr().out)
    faults = doc["live_faults"]
    assert faults["loss"] == 0.2 and faults["outage_min"] == [5.0, 10.0]
    st = faults["policies"]["nagashi-live"]
    assert st["runs"] == 1 and st["heartbeats"] == 3 * 60 and st["heartbeats_outage"] == 3 * 20
    assert 0.0 < st["offline_share"] < 1.0
    assert doc["config"]["live_loss"] == 0.2
    assert "live_faults" not in doc["policies"]["nagashi-live"]


def test_sim_config_refuses_bad_faults() -> None:
    for bad in ({"live_loss": -0.1}, {"live_outage_min": (10.0, 5.0)}):
        with pytest.raises(ValueError):
            SimConfig(**bad)
    with pytest.raises(ValueError):
        SimConfig(hours=1.0, live_outage_min=(60.0, 90.0))  # starts after the shift
