"""``nagashi-agent+model`` (issue 18): the agent's own tick in every simulated cab with the
recent-demand cell model in its bundle (tools.sim.agent_tick, tools.sim.sim_model), on the
small model of the models tests and the held-out 2014-04-24 of the Uber month
(tests/tools/test_sim_model.py's setting)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import tools.sim.agent_tick as agent_tick
from agent.bundle import LoadedBundle
from agent.decide import TickInputs, TickResult, decide
from agent.tick_recent import RECENT_OTHER_GRID
from models import RecentCounts
from safety import SafetyGate
from sync.live import Snapshot
from tests.tools.test_sim_model import (  # the model, the world and a dispatch live layer
    _requests_layer,
    setting,
)
from tools.sim.agent_compare import agent_figures
from tools.sim.agent_tick import NagashiAgentPolicy, _Cab
from tools.sim.engine import run_shift
from tools.sim.policies import Allowed
from tools.sim.replay import Replay, replay_passengers
from tools.sim.sim_model import RECENT_SIM_WARMING, RECENT_USED, cab_time_s
from tools.sim.world import World

__all__ = ["setting"]  # a fixture, used by name

UNTIL_S = 3900.0  # the layer's snapshot: past the 60-minute warm-up


#: what only a +model agent reports, and the compared first moves (against the +model
#: read-out: another peer)
MODEL_KEYS = {
    "readouts_by_recent",
    "compare_readouts_by_recent",
    "live_pickups_per_hail",
    "expected_fleet_pickups_60m",
    "live_counts",
    "first_moves_equal",
    "first_move_equal_share",
}


def _stable(stats: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in stats.items() if not k.endswith("cpu_s") and k not in MODEL_KEYS}


def test_without_recent_inputs_the_agent_with_the_model_is_the_agent(
    setting: tuple[World, Replay],
) -> None:
    """Offline, and live while the layer warms up (no recent inputs either), the model's
    factor is 1: the whole shift equals nagashi-agent's (offline) exactly."""
    world, replay = setting
    short = dataclasses.replace(world, config=dataclasses.replace(world.config, hours=0.1))
    pax = replay_passengers(short, replay.days[0], 3)
    for stat_name in ("nagashi-agent-offline", "nagashi-agent"):
        r0 = run_shift(short, pax, stat_name, 3, 1.0, record=True)
        r1 = run_shift(short, pax, f"{stat_name}+model", 3, 1.0, record=True)
        assert r0.metrics() == r1.metrics() and r0.tracks == r1.tracks
        assert sum(len(t) for t in r0.tracks) > 10
        st0, st1 = r0.policy_stats, r1.policy_stats
        assert _stable(st0) == _stable(st1)  # the same ticks, triggers, fallbacks, moves
        by = st1["readouts_by_recent"]
        assert sum(by.values()) == st1["ticks"] > 0
        if stat_name == "nagashi-agent-offline":
            assert set(by) <= {"RECENT_NO_SNAPSHOT", "not_asked"} and by["RECENT_NO_SNAPSHOT"]
        else:  # the warm-up rule holds for the agent's own tick too
            assert by.get(RECENT_SIM_WARMING, 0) > 0
            assert set(by) <= {"RECENT_NO_SNAPSHOT", RECENT_SIM_WARMING, "not_asked"}
            # bench simagent's figures: each agent policy, compared with its own peer
            fig = agent_figures({stat_name: [r0], f"{stat_name}+model": [r1]}, 0.1)
            assert fig[f"{stat_name}+model"]["compared_with"] == "nagashi-live+model"
            assert fig[stat_name]["compared_with"] == "nagashi-live"
            assert fig[f"{stat_name}+model"]["ticks"] == fig[stat_name]["ticks"] == st0["ticks"]


def _agent(world: World, layer_until_s: float, replay: Replay) -> NagashiAgentPolicy:
    """nagashi-agent+model for two cabs of a dispatch market whose live layer has heard every
    request until ``layer_until_s`` (one snapshot, built then)."""
    w = dataclasses.replace(world, config=dataclasses.replace(world.config, matching="dispatch"))
    pol = NagashiAgentPolicy(
        w,
        Allowed(w),
        np.random.default_rng(0),
        1.0,
        seed=5,
        n_cabs=2,
        model=True,
        compare=False,
        gps_sigma_m=0.0,
        heading_sigma_deg=0.0,
    )
    pol.live = _requests_layer(w, replay, layer_until_s)
    return pol


def _one_tick(pol: NagashiAgentPolicy, at_s: float, monkeypatch: pytest.MonkeyPatch) -> TickResult:
    """Cab 0's tick at ``at_s`` at the end of a cruisable link in the middle of the area."""
    got: list[TickResult] = []
    real = decide

    def keep(lb: LoadedBundle, inputs: TickInputs, gate: SafetyGate | None = None) -> TickResult:
        got.append(real(lb, inputs, gate))
        return got[-1]

    monkeypatch.setattr(agent_tick, "decide", keep)
    w = pol.world
    cruisable = np.flatnonzero(w.cruisable)
    link = int(cruisable[cruisable.size // 2])
    pol._tick(0, _Cab(), link, at_s, at_s, "first", None)  # type: ignore[arg-type]  # no Fleet: compare is off
    assert len(got) == 1
    return got[0]


def test_the_agent_s_tick_demand_is_the_live_model_cab_s(
    setting: tuple[World, Replay], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a snapshot, the agent's own tick_recent reads the snapshot's minute (its clock is
    the cab's), and its tick demand is what nagashi-live+model's cab gets for the same
    snapshot and minute: the world's tick demand with the model and those recent inputs."""
    world, replay = setting
    pol = _agent(world, UNTIL_S, replay)
    assert pol.live is not None
    snap = pol.live.snapshots[-1][1]
    at_s = UNTIL_S + 40.0  # both cabs have fetched it (their delays are under 30 s)
    r = _one_tick(pol, at_s, monkeypatch)
    # on the cab's clock: the fixes' and the snapshot's times on one base
    assert r.inputs.live is not None and r.inputs.live.snapshot is not None
    assert r.inputs.now_s == cab_time_s(pol.world, at_s)
    assert r.inputs.live.snapshot.built_s == cab_time_s(pol.world, snap.built_s)
    assert r.inputs.live.age_s == pytest.approx(at_s - snap.built_s)
    rec = r.recent
    assert rec is not None and rec["reason"] == "" and rec["used"], rec
    assert rec["end_minute_of_week"] == math.floor(pol.world.minute_at(snap.built_s))
    assert rec["scale"] == 1.0  # dispatch, Uber records replayed: a request is a model pickup
    assert pol.stats()["readouts_by_recent"] == {RECENT_USED: 1}
    # nagashi-live+model's cab with the same snapshot at the same minute
    sim = pol.world.model
    assert sim is not None
    recent, why = sim.recent(pol._lb, pol.world, snap)
    assert isinstance(recent, RecentCounts), why
    minute = math.floor(pol.world.minute_at(at_s))
    live = pol.world.tick_demand(minute, 1.0, model=True, recent=recent)
    demand = r.demand
    assert demand is not None and demand.source.startswith("onnx:")
    k = demand.slot_minute_of_week.size
    assert np.array_equal(live.slot_minute_of_week[:k], demand.slot_minute_of_week)
    cols = pol.world.graph.local(demand.edge_id)  # the world's links are live's
    assert cols.min() >= 0 and np.array_equal(live.edge_id[cols], demand.edge_id)
    np.testing.assert_allclose(demand.pickups_per_h, live.pickups_per_h[:k, cols], rtol=1e-6)
    # and the recent inputs matter: not the statistics' rates
    stat = pol.world.tick_demand(minute, 1.0)
    assert not np.allclose(demand.pickups_per_h, stat.pickups_per_h[:k, cols], rtol=1e-3)


def test_the_warm_up_rule_holds_in_the_agent_s_tick(
    setting: tuple[World, Replay], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the live layer has run for an hour the cab gets the snapshot without its cell
    counts (the fleet's counts kept): its tick plans on statistics, counted as warming up."""
    world, replay = setting
    pol = _agent(world, 1800.0, replay)
    assert pol.live is not None
    snap = pol.live.snapshots[-1][1]
    assert snap.cell_ids.size > 0  # the layer did count cells
    r = _one_tick(pol, 1840.0, monkeypatch)
    assert r.inputs.live is not None
    seen = r.inputs.live.snapshot
    assert isinstance(seen, Snapshot)  # the simulated server's, as the cab received it
    assert seen.grid is None and seen.cell_ids.size == 0
    assert np.array_equal(seen.link_ids, snap.link_ids)
    assert np.array_equal(seen.vacant_now, snap.vacant_now)
    assert r.recent is not None and r.recent["reason"] == RECENT_OTHER_GRID
    assert pol.stats()["readouts_by_recent"] == {RECENT_SIM_WARMING: 1}
    demand = r.demand
    assert demand is not None
    minute = math.floor(pol.world.minute_at(1840.0))
    stat = pol.world.tick_demand(minute, 1.0)
    cols = pol.world.graph.local(demand.edge_id)
    k = demand.slot_minute_of_week.size
    assert np.array_equal(demand.pickups_per_h, stat.pickups_per_h[:k, cols])


def test_simulate_runs_the_agent_s_model_twins() -> None:
    from tools.cmd_simulate import _policies, _with_model_twins
    from tools.errors import ToolsError

    names = _policies("hotspot,nagashi-agent,nagashi-agent-offline", False)
    assert _with_model_twins(names, "DIR") == [
        "hotspot",
        "nagashi-agent",
        "nagashi-agent+model",
        "nagashi-agent-offline",
        "nagashi-agent-offline+model",
    ]
    with pytest.raises(ToolsError, match="needs --model"):
        _with_model_twins(_policies("nagashi-agent+model", False), None)
