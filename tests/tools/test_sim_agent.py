"""``nagashi-agent`` (tools.sim.agent_tick): every simulated cab runs the agent's own tick,
drives the route its instruction shows, follows the road when the tick falls back, and a run
is repeatable."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import tools.sim.agent_tick as agent_tick
from agent.bundle import LoadedBundle
from agent.decide import TickInputs, TickResult, decide
from safety import Fix, SafetyConfig, SafetyGate, follow_the_road
from tests.tools.test_simulate import world  # noqa: F401  (the module fixture)
from tools.sim.agent_compare import agent_figures
from tools.sim.agent_tick import MIN_TICK_S, SIM_EPOCH_S, TICK_S, NagashiAgentPolicy
from tools.sim.engine import run_shift
from tools.sim.policies import Fleet
from tools.sim.world import World, make_passengers

MULTIPLIER = 10.0


@pytest.fixture(scope="module")
def short(world: World) -> World:  # noqa: F811
    """Five minutes of the evening peak, three cabs on the policy under test."""
    return dataclasses.replace(world, config=dataclasses.replace(world.config, hours=1 / 12))


@dataclasses.dataclass
class Calls:
    """The ticks of one run, in order: (inputs, result), and each move a cab made."""

    ticks: list[tuple[TickInputs, TickResult]] = dataclasses.field(default_factory=list)
    # (taxi, link, t_s, chosen, the ticks made in this choice)
    moves: list[tuple[int, int, float, int, list[TickResult]]] = dataclasses.field(
        default_factory=list
    )


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    """Counts every call of ``agent.decide.decide`` the policy makes (the real function runs)
    and records each choice of a cab."""
    got = Calls()
    real_decide = decide
    real_choose = NagashiAgentPolicy.choose

    def counting(
        lb: LoadedBundle, inputs: TickInputs, gate: SafetyGate | None = None
    ) -> TickResult:
        r = real_decide(lb, inputs, gate)
        got.ticks.append((inputs, r))
        return r

    def choose(self: NagashiAgentPolicy, taxi: int, link: int, t_s: float, fleet: Fleet) -> int:
        before = len(got.ticks)
        f = real_choose(self, taxi, link, t_s, fleet)
        got.moves.append((taxi, link, t_s, f, [r for _, r in got.ticks[before:]]))
        return f

    monkeypatch.setattr(agent_tick, "decide", counting)
    monkeypatch.setattr(NagashiAgentPolicy, "choose", choose)
    yield got


def test_each_cab_runs_the_tick_and_drives_its_instruction(short: World, calls: Calls) -> None:
    pax = make_passengers(short, 0, MULTIPLIER)
    run = run_shift(short, pax, "nagashi-agent", 0, MULTIPLIER, record=True)
    st = run.policy_stats
    # every tick is one real call of decide, and every cab ticked
    assert st["ticks"] == len(calls.ticks) > 0
    assert {taxi for taxi, *_ in calls.moves} == set(range(short.config.test_taxis))
    assert sum(st["ticks_by_trigger"].values()) == st["ticks"]
    assert st["ticks_by_trigger"]["first"] == short.config.test_taxis
    # at the agent's interval: a cab's interval ticks are whole intervals after its last tick
    last: dict[int, float] = {}
    for taxi, _, _, _, made in calls.moves:
        for r in made:
            now = r.inputs.now_s
            if taxi in last:
                assert now - last[taxi] >= MIN_TICK_S - 1e-6
                if r.inputs.trigger == "interval":
                    k = (now - last[taxi]) / TICK_S
                    assert k >= 1 - 1e-9 and abs(k - round(k)) < 1e-6
            last[taxi] = now
    # the fix is made from the cab's position on its link: the tick matches it there, or on
    # the next link when the cab is at the junction
    g = short.graph
    on_link = sum(
        1
        for _, link, _, _, made in calls.moves
        for r in made
        if r.match is not None
        and int(g.local([r.match.best.edge_id])[0]) in (link, *short.succ[link])
    )
    assert on_link >= 0.9 * st["ticks"]
    # the cab drives the route its latest instruction shows, link by link
    ahead: dict[int, list[int]] = {}
    checked = 0
    for taxi, link, _, chosen, made in calls.moves:
        if made:
            ins = made[-1].instruction
            route = [int(x) for x in g.local(list(ins.route_edges))]
            if ins.kind == "route" and route and route[0] == link:
                ahead[taxi] = route[1:]
            elif ins.kind == "route" and route and route[0] in short.succ[link]:
                ahead[taxi] = route  # matched on the next link already, at the junction
            else:
                ahead.pop(taxi, None)
        want = ahead.get(taxi)
        if want:
            assert chosen == want.pop(0), "the cab left the route it was shown"
            checked += 1
    assert checked >= 0.8 * st["moves"]
    assert st["route_moves"] >= checked
    # and the tick's instruction is what nagashi-live mostly reads out too (counted, in [0, 1])
    assert 0 < st["first_moves_compared"] <= st["ticks"]
    assert 0.0 <= st["first_move_equal_share"] <= 1.0
    assert run.cpu_s >= st["tick_cpu_s"] > 0


def test_a_bad_fix_falls_back_and_the_cab_follows_the_road(
    short: World, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = NagashiAgentPolicy.make_fix

    def poor(self: NagashiAgentPolicy, link: int, fraction: float, t_s: float) -> Fix:
        # a receiver that reports a 500 m accuracy radius: never good enough to guide on
        return dataclasses.replace(real(self, link, fraction, t_s), accuracy_m=500.0)

    monkeypatch.setattr(NagashiAgentPolicy, "make_fix", poor)
    pax = make_passengers(short, 0, MULTIPLIER)
    run = run_shift(short, pax, "nagashi-agent", 0, MULTIPLIER, record=True)
    st = run.policy_stats
    assert st["ticks"] == len(calls.ticks) > 0
    assert st["fallback_ticks"] == st["ticks"] and st["fallback_share"] == 1.0
    assert st["fallback_reasons"].get("GPS_POOR_ACCURACY") == st["ticks"]
    assert all(r.instruction.kind == "fallback" for _, r in calls.ticks)
    assert st["route_moves"] == 0 and st["road_moves"] == st["moves"] > 0
    # at each tick the cab takes the road's continuation from its true link
    g = short.graph
    cfg = SafetyConfig().route
    followed = 0
    for _, link, t_s, chosen, made in calls.moves:
        if not made:
            continue
        minute = short.minute_at(t_s)
        road = follow_the_road(g, int(g.edge_id[link]), minute, cfg)
        if len(road) > 1:
            assert chosen == int(g.local([road[1]])[0])
            followed += 1
    assert followed > 0


def _stable(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if not k.endswith("cpu_s")}


def test_the_same_seed_gives_the_same_run(short: World) -> None:
    pax = make_passengers(short, 1, MULTIPLIER)
    a = run_shift(short, pax, "nagashi-agent", 1, MULTIPLIER, record=True)
    b = run_shift(short, pax, "nagashi-agent", 1, MULTIPLIER, record=True)
    assert json.dumps(a.metrics()) == json.dumps(b.metrics())  # NaN when no pickup
    assert a.tracks == b.tracks and sum(len(t) for t in a.tracks) > 20
    assert _stable(a.policy_stats) == _stable(b.policy_stats)
    assert not math.isnan(a.policy_stats["fallback_share"])
    # the comparison's figures add the runs' counts up
    fig = agent_figures({"nagashi-agent": [a, b]}, short.config.hours)["nagashi-agent"]
    assert fig["ticks"] == 2 * a.policy_stats["ticks"]
    assert fig["fallback_ticks"] == 2 * a.policy_stats["fallback_ticks"]
    assert fig["first_move_equal_share"]["mean"] == pytest.approx(
        a.policy_stats["first_move_equal_share"], abs=1e-4
    )
    cab_h = 2 * a.test_taxis * short.config.hours
    assert fig["ticks_per_cab_h"] == pytest.approx(fig["ticks"] / cab_h, abs=0.01)
    share = sum(a.policy_stats["fallback_reasons"].values()) / a.policy_stats["ticks"]
    assert sum(fig["fallback_reasons_per_tick"].values()) == pytest.approx(share, abs=1e-4)


def test_the_simulated_fix_is_the_cab_on_its_link(short: World) -> None:
    from tools.sim.policies import Allowed

    pol = NagashiAgentPolicy(
        short,
        Allowed(short),
        np.random.default_rng(0),
        MULTIPLIER,
        seed=0,
        gps_sigma_m=0.0,
        heading_sigma_deg=0.0,
    )
    g = short.graph
    e = int(np.flatnonzero(short.cruisable)[10])
    start, end = pol.make_fix(e, 0.0, 30.0), pol.make_fix(e, 1.0, 30.0)
    geom = g.geometry(e)
    assert (start.lon, start.lat) == pytest.approx(tuple(geom[0]), abs=1e-9)
    assert (end.lon, end.lat) == pytest.approx(tuple(geom[-1]), abs=1e-9)
    assert start.time_s == SIM_EPOCH_S + short.minute_at(30.0) * 60.0
    assert end.heading_deg == pytest.approx(float(g.bearing_end[e]), abs=2.0)
    assert end.speed_mps == pytest.approx(float(short.length_m[e] / short.tau_s[e]))


def test_simulate_and_the_gate_accept_the_agent_policies() -> None:
    from tools.cmd_simulate import _policies
    from tools.errors import ToolsError

    assert _policies("hotspot,nagashi-agent,nagashi-agent-offline", False) == [
        "hotspot",
        "nagashi-agent",
        "nagashi-agent-offline",
    ]
    assert _policies("nagashi-agent", True, gate_policy="nagashi-agent") == [
        "nagashi-agent",
        "hotspot",
    ]
    with pytest.raises(ToolsError):
        _policies("nagashi-agents", False)
