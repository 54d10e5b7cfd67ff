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
#: (:func:`_ticks_digest`), recorded on the code before the speed-ups (the ticks' digest
#: re-recorded on 2026-12-03 when it began rounding to 12 significant digits, and again when
#: the instruction's expected revenue went to the plan's 4 decimals: the old ticks with that
#: one field rounded give the new digest)
DIGESTS: dict[tuple[str, int, int], tuple[str, str]] = {
    ("nagashi-agent", 0, 10): (
        "8a9568b3b257014ed2fbad115a09d87195b89b3bd1ae890561b56eb41fd163b8",
        "b2466edcf8b8835c81a1912b8bacfe1e2d25733589becc26b707bcfcfce4b5b8",
    ),
    ("nagashi-agent-offline", 2, 5): (
        "8c85461cc6cdf29755a7748710716b46cffb58e35358bb8ecf981d56f5c3a379",
        "619bf4cf623ffb0bfca9de6cc004d218a1c124afa34cd8ca6ddd19b2960c4db9",
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


#: significant digits of every float in a tick's document (:func:`_ticks_digest`)
TICK_DIGITS = 12


def _rounded(x: Any) -> Any:
    """``x`` with every float rounded to :data:`TICK_DIGITS` significant digits."""
    if isinstance(x, float):
        return float(f"{x:.{TICK_DIGITS}g}")
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_rounded(v) for v in x]
    return x


def _ticks_digest(docs: list[dict[str, Any]]) -> str:
    """The ticks' inputs and instructions, each float to :data:`TICK_DIGITS` significant digits.

    The last bits of a value are the CPU's: numpy picks its ``exp``, ``expm1`` and sums by the
    SIMD the CPU has (``NPY_DISABLE_CPU_FEATURES`` shows it), so the same ticks gave an
    instruction's ``expected_revenue`` one ulp apart (about 10⁻¹⁶ relative) on the machine the
    digests were recorded on and on an AMD Zen 5 (two ticks of 93). Rounded, the digests are
    the same with numpy's AVX-512, AVX2 and baseline loops and OpenBLAS's Haswell and SkylakeX
    kernels; twelve digits are far finer than anything a decision or the driver's page reads
    (the instruction shows revenue to the cent). The run's own digest (:func:`_run_digest`:
    tracks, pickups, metrics) stays exact, and the C pass and walk are checked bit for bit
    against numpy and Python on the machine itself (tests/agent/test_kernel_c.py,
    test_walk_c.py)."""
    text = "\n".join(json.dumps(_rounded(d), sort_keys=True, default=repr) for d in docs)
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
def ticks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Every tick the policy makes, as its document (the real decide runs)."""
    got: list[dict[str, Any]] = []
    real = decide

    def keep(lb: LoadedBundle, inputs: TickInputs, gate: SafetyGate | None = None) -> TickResult:
        r = real(lb, inputs, gate)
        got.append(_tick_doc(inputs, r))
        return r

    monkeypatch.setattr(agent_tick, "decide", keep)
    yield got


@pytest.mark.parametrize(
    ("policy", "seed", "minutes"), [("nagashi-agent", 0, 10), ("nagashi-agent-offline", 2, 5)]
)
def test_a_short_agent_run_is_byte_identical(
    world: World,  # noqa: F811
    ticks: list[dict[str, Any]],
    policy: str,
    seed: int,
    minutes: int,
) -> None:
    w = dataclasses.replace(world, config=dataclasses.replace(world.config, hours=minutes / 60))
    pax = make_passengers(w, seed, MULTIPLIER)
    run = run_shift(w, pax, policy, seed, MULTIPLIER, record=True)
    assert run.policy_stats["ticks"] == len(ticks) > 20
    got = (_run_digest(run), _ticks_digest(ticks))
    print(policy, seed, minutes, got, run.policy_stats["ticks"])
    assert got == DIGESTS[(policy, seed, minutes)]


def test_the_ticks_digest_sees_a_change_past_the_last_bits() -> None:
    doc = {"instruction": {"expected_revenue": 24.858590893573545, "edges": [3, 4]}}
    ulp = {"instruction": {"expected_revenue": 24.85859089357355, "edges": [3, 4]}}
    moved = {"instruction": {"expected_revenue": 24.85859089, "edges": [3, 4]}}
    other = {"instruction": {"expected_revenue": 24.858590893573545, "edges": [3, 5]}}
    assert _ticks_digest([doc]) == _ticks_digest([ulp])
    assert len({_ticks_digest([d]) for d in (doc, moved, other)}) == 3
