"""``nagashi-offline-spread`` (issue 17, "Offline"): the offline fleet whose read-out takes one
of the near-best successors by a per-cab hash. Deterministic, and ``nagashi-offline`` exactly
with the margin 0."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.tools.test_simulate import world  # noqa: F401  (the module fixture)
from tools.cmd_simulate import _policies
from tools.errors import ToolsError
from tools.sim.engine import RunResult, run_shift
from tools.sim.policies import Allowed, NagashiSpreadPolicy, make_policy, spread_eps_of
from tools.sim.spread import SPREAD_EPS, spread_hash
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
    assert zero.policy_stats["spread_deviations"] == 0
    spread = run_shift(w, pax, "nagashi-offline-spread@0.1", 5, 10.0, record=True)
    again = run_shift(w, pax, "nagashi-offline-spread@0.1", 5, 10.0, record=True)
    assert _outputs(spread) == _outputs(again)  # the same seed gives the same shift
    assert spread.policy_stats == again.policy_stats
    assert spread.policy_stats["spread_deviations"] > 0
    assert _outputs(spread) != _outputs(off)  # the cabs took other streets


def test_the_hash_is_per_cab_link_and_minute() -> None:
    h = spread_hash(1, 2, 3, 4)
    assert h == spread_hash(1, 2, 3, 4) and 0 <= h < 2**64
    others = {spread_hash(1, 2, 3, 5), spread_hash(1, 7, 3, 4), spread_hash(1, 2, 8, 4)}
    assert h not in others and len(others) == 3
    assert spread_hash(2, 2, 3, 4) != h  # another run seed: other choices


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
    assert isinstance(pol, NagashiSpreadPolicy) and pol.eps == 0.02 and pol.live is None
