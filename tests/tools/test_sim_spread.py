"""``nagashi-offline-spread`` (issue 17, "Offline"): the offline fleet whose read-out takes one
of the near-best successors by a per-cab hash, the agent's own spread
(``PlannerParams.route_spread_eps``). Deterministic, ``nagashi-offline`` exactly with the margin
0, and ``nagashi-offline`` spreads as the world's parameters say."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.tools.test_simulate import world  # noqa: F401  (the module fixture)
from tools.cmd_simulate import _policies
from tools.errors import ToolsError
from tools.sim.engine import run_shift
from tools.sim.nagashi import sim_salt
from tools.sim.policies import Allowed, NagashiSpreadPolicy, make_policy, spread_eps_of
from tools.sim.result import RunResult
from tools.sim.spread import SPREAD_EPS
from tools.sim.world import World, make_passengers


def _short(w0: World) -> World:
    """20 minutes, every cab on the policy under test."""
    cfg = dataclasses.replace(w0.config, hours=1 / 3, test_taxis=w0.config.taxis)
    return dataclasses.replace(w0, config=cfg)


def _outputs(run: RunResult) -> dict[str, Any]:
    out = dataclasses.asdict(run)
    # CPU time varies; the name and the stats differ by design
    del out["cpu_s"], out["policy_stats"], out["policy"]
    return out


def test_margin_zero_is_nagashi_offline_and_a_margin_spreads(world: World) -> None:  # noqa: F811
    w = _short(world)
    pax = make_passengers(w, 5, 10.0)
    off = run_shift(w, pax, "nagashi-offline", 5, 10.0, record=True)
    zero = run_shift(w, pax, "nagashi-offline-spread@0", 5, 10.0, record=True)
    assert _outputs(zero) == _outputs(off)
    assert zero.policy_stats["spread_readouts"] == 0
    spread = run_shift(w, pax, "nagashi-offline-spread@0.1", 5, 10.0, record=True)
    again = run_shift(w, pax, "nagashi-offline-spread@0.1", 5, 10.0, record=True)
    assert _outputs(spread) == _outputs(again)  # the same seed gives the same shift
    assert spread.policy_stats == again.policy_stats
    assert spread.policy_stats["spread_readouts"] > 0
    assert _outputs(spread) != _outputs(off)  # the cabs took other streets
    # the shipped parameter drives nagashi-offline itself, as it drives the agent
    params = dataclasses.replace(w.params, route_spread_eps=0.1)
    shipped = run_shift(
        dataclasses.replace(w, params=params), pax, "nagashi-offline", 5, 10.0, record=True
    )
    assert _outputs(shipped) == _outputs(spread)


def test_each_cab_and_run_has_its_own_salt() -> None:
    salts = {sim_salt(seed, cab) for seed in (1, 2) for cab in range(50)}
    assert len(salts) == 100 and sim_salt(1, 3) == sim_salt(1, 3)


def test_policy_names_and_margins(world: World) -> None:  # noqa: F811
    assert spread_eps_of("nagashi-offline-spread") == SPREAD_EPS
    assert spread_eps_of("nagashi-offline-spread@0.02") == 0.02
    assert spread_eps_of("nagashi-offline") is None
    for bad in ("nagashi-offline-spread@", "nagashi-offline-spread@x", "nagashi-offline-spread@-1"):
        with pytest.raises(ValueError, match="margin"):
            spread_eps_of(bad)
        with pytest.raises(ToolsError, match="margin"):
            _policies(f"hotspot,{bad}", False)
    assert _policies("hotspot,nagashi-offline-spread@0.02", False)[1].endswith("@0.02")
    pol = make_policy("nagashi-offline-spread@0.02", world, Allowed(world), 0, 10.0)
    assert isinstance(pol, NagashiSpreadPolicy) and pol.spread_eps == 0.02 and pol.live is None
