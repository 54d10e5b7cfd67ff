"""``nagashi-agent``'s results are pinned (issue 16, the simulator's speed-ups): a short run's
metrics, tracks, counts and every tick's inputs and instruction hash to the digests recorded
before the agent policy was made faster, so a speed-up that changes one byte of a result fails
here.

A change that is meant to change the agent's decisions (agent.decide, the planner, the read-out,
safety/, the simulated fix) changes these digests too: check that it was meant, then record the
new ones (the test prints them)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

import tools.sim.agent_tick as agent_tick
from agent.bundle import LoadedBundle
from agent.decide import TickInputs, TickResult, decide
from safety import SafetyGate
from tests.tools.test_simulate import world  # noqa: F401  (the module fixture)
from tools.sim.engine import RunResult, run_shift
from tools.sim.world import World, make_passengers

MULTIPLIER = 10.0

#: (policy, seed, minutes) -> sha256 of the run (:func:`_run_digest`) and of its ticks
#: (:func:`_ticks_digest`), recorded on the code before the speed-ups
DIGESTS: dict[tuple[str, int, int], tuple[str, str]] = {
    ("nagashi-agent", 0, 10): (
        "8a9568b3b257014ed2fbad115a09d87195b89b3bd1ae890561b56eb41fd163b8",
        "f4258726cb541126f8b140d0326c9d699bd007d41eac96391a04ad0340acf844",
    ),
    ("nagashi-agent-offline", 2, 5): (
        "8c85461cc6cdf29755a7748710716b46cffb58e35358bb8ecf981d56f5c3a379",
        "403ffe1d916ed8c733600ce9ef713a6d89418ed2d9466248f2c97f186cfd6c21",
    ),
}


def _run_digest(r: RunResult) -> str:
    """The run's metrics, tracks, pickups and counts (but the CPU seconds)."""
    stats = {k: v for k, v in r.policy_stats.items() if not k.endswith("cpu_s")}
    doc = {
        "metrics": r.metrics(),
        "tracks": r.tracks,
        "pickups": r.pickups,
        "stats": stats,
        "served": r.served,
        "passengers": r.passengers,
        "fleet_revenue_per_h": r.fleet_revenue_per_h,
    }
    text = json.dumps(doc, sort_keys=True, default=repr)  # NaN as NaN: the same bytes
    return hashlib.sha256(text.encode()).hexdigest()


def _tick_doc(inputs: TickInputs, r: TickResult) -> dict[str, Any]:
    fix, prev, moving = inputs.fix, inputs.previous_fix, inputs.last_moving_fix
    m = r.match
    return {
        "now_s": inputs.now_s,
        "trigger": inputs.trigger,
        "fix": None if fix is None else fix.to_record(),
        "previous_fix": None if prev is None else prev.to_record(),
        "last_moving_fix": None if moving is None else moving.to_record(),
        "last_pass_age_s": inputs.last_pass_age_s,
        "previous_route": inputs.previous_route,
        "live": None if inputs.live is None else inputs.live.to_record(),
        "match": None if m is None else [m.best.edge_id, m.best.fraction, m.ambiguous],
        "instruction": r.instruction.to_json(),
    }


@pytest.fixture
def ticks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every tick the policy makes, as JSON (the real decide runs)."""
    got: list[str] = []
    real = decide

    def keep(lb: LoadedBundle, inputs: TickInputs, gate: SafetyGate | None = None) -> TickResult:
        r = real(lb, inputs, gate)
        got.append(json.dumps(_tick_doc(inputs, r), sort_keys=True, default=repr))
        return r

    monkeypatch.setattr(agent_tick, "decide", keep)
    yield got


@pytest.mark.parametrize(
    ("policy", "seed", "minutes"), [("nagashi-agent", 0, 10), ("nagashi-agent-offline", 2, 5)]
)
def test_a_short_agent_run_is_byte_identical(
    world: World,  # noqa: F811
    ticks: list[str],
    policy: str,
    seed: int,
    minutes: int,
) -> None:
    w = dataclasses.replace(world, config=dataclasses.replace(world.config, hours=minutes / 60))
    pax = make_passengers(w, seed, MULTIPLIER)
    run = run_shift(w, pax, policy, seed, MULTIPLIER, record=True)
    assert run.policy_stats["ticks"] == len(ticks) > 20
    got = (_run_digest(run), hashlib.sha256("\n".join(ticks).encode()).hexdigest())
    print(policy, seed, minutes, got, run.policy_stats["ticks"])
    assert got == DIGESTS[(policy, seed, minutes)]
