"""The planner's view of the fleet (agent.planner.fleet): the live snapshot's counts without the
cab's own heartbeat, the supply prior offline, and how claims and seen cabs change the read-out."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from agent.planner import PlannerParams, fleet_view, plan_cruise, solve, with_fleet
from agent.planner.fleet import CLAIM_HORIZON_S, LIVE, NONE, PRIOR, demand_aligned
from agent.planner.readout import action_values
from tests.agent.test_planner import demand, figure_eight


@dataclass
class FakeSnapshot:
    """The fields and the one method of sync.live.Snapshot that the planner reads."""

    ids: list[int]
    now: list[int]
    planned: list[int]
    built_s: float = 1000.0
    version: int = 7
    sha256: str = "ab" * 32

    def link_counts(self, edge_ids: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(edge_ids, dtype=np.int64)
        m_now = dict(zip(self.ids, self.now, strict=True))
        m_pl = dict(zip(self.ids, self.planned, strict=True))
        return (
            np.array([m_now.get(int(i), 0) for i in ids], dtype=np.int64),
            np.array([m_pl.get(int(i), 0) for i in ids], dtype=np.int64),
        )


def test_without_snapshot_the_prior_or_nothing() -> None:
    g = figure_eight()
    assert fleet_view(g, now_s=0.0).source == NONE
    v = fleet_view(g, now_s=0.0, prior_per_h=[1.0, 2.0, float("nan"), -3.0])
    assert v.source == PRIOR
    assert v.supply_per_h is not None
    assert v.supply_per_h.tolist() == [1.0, 2.0, 0.0, 0.0]  # unreadable closes, never opens
    assert v.claims_per_h is None and v.seen_age_s is None
    with pytest.raises(ValueError, match="supply prior"):
        fleet_view(g, now_s=0.0, prior_per_h=[1.0])


def test_the_cab_does_not_see_its_own_heartbeat() -> None:
    g = figure_eight()
    # the snapshot counts this cab on link 1 with route 1 -> 2 -> 3, and one other cab on 3
    snap = FakeSnapshot(ids=[1, 2, 3], now=[1, 0, 1], planned=[0, 1, 2])
    v = fleet_view(g, now_s=1030.0, snapshot=snap, own_link=1, own_route=[1, 2, 3])
    assert v.source == LIVE and v.snapshot_version == 7
    assert v.claims_per_h is not None and v.seen_age_s is not None
    per_pass = 3600.0 / CLAIM_HORIZON_S
    assert v.claims_per_h.tolist() == [0.0, 0.0, 0.0, per_pass]
    assert v.supply_per_h is not None and v.supply_per_h.tolist() == v.claims_per_h.tolist()
    withp = fleet_view(
        g,
        now_s=1030.0,
        snapshot=snap,
        own_link=1,
        own_route=[1, 2, 3],
        prior_per_h=[1.0, 1.0, 1.0, 1.0],
    )
    assert withp.supply_per_h is not None
    assert withp.supply_per_h.tolist() == [1.0, 1.0, 1.0, 1.0 + per_pass]
    assert v.seen_age_s[3] == 30.0 and math.isinf(v.seen_age_s[1])
    alone = fleet_view(
        g, now_s=1030.0, snapshot=FakeSnapshot([1, 2], [1, 0], [0, 1]), own_link=1, own_route=[1, 2]
    )
    assert alone.claims_per_h is None and alone.seen_age_s is None


def test_a_claimed_link_is_worth_less_in_the_read_out_only() -> None:
    g = figure_eight()
    params = PlannerParams()
    table = solve(g, demand((3.0, 0.0, 3.0, 0.0), dropoff_inside=1.0), 605.0, params)
    links = np.array([0, 2])
    q = action_values(table, 0, links)
    assert q[0] == pytest.approx(q[1])  # the two loops are symmetric
    view = fleet_view(g, now_s=0.0, snapshot=FakeSnapshot([0], [0], [1], built_s=0.0))
    seen_by = with_fleet(table, view)
    q2 = action_values(seen_by, 0, links)
    assert q2[0] < q[0] and q2[1] == pytest.approx(q[1])
    assert seen_by.values is table.values  # the horizon's values are not solved again
    assert with_fleet(table, fleet_view(g, now_s=0.0)) is table


def test_two_cabs_at_one_junction_take_different_loops() -> None:
    g = figure_eight()
    params = PlannerParams(route_min_m=50.0, route_min_s=10.0)
    d = demand((3.0, 0.0, 3.0, 0.0), dropoff_inside=1.0)
    first = plan_cruise(g, d, 1, 605.0, params, fraction=1.0)
    # the second cab sees the first one's route claimed in the snapshot
    claimed = [int(x) for x in first.edges]
    snap = FakeSnapshot(
        ids=sorted(set(claimed)),
        now=[0] * len(set(claimed)),
        planned=[1] * len(set(claimed)),
        built_s=0.0,
    )
    view = fleet_view(g, now_s=0.0, snapshot=snap)
    second = plan_cruise(g, d, 3, 605.0, params, fraction=1.0, fleet=view)
    assert first.edges[0] in (0, 2)
    assert second.edges[0] in (0, 2) and second.edges[0] != first.edges[0]


def test_a_seen_cab_drains_the_curb_and_the_prior_lowers_values() -> None:
    g = figure_eight()
    params = PlannerParams()
    d = demand((3.0, 0.0, 3.0, 0.0), dropoff_inside=1.0)
    # another vacant cab is on loop one's link 0 now: the cab goes round loop two
    view = fleet_view(g, now_s=0.0, snapshot=FakeSnapshot([0], [1], [0], built_s=0.0))
    assert plan_cruise(g, d, 1, 605.0, params, fraction=1.0, fleet=view).edges[0] == 2
    busy = fleet_view(g, now_s=0.0, prior_per_h=[60.0, 0.0, 0.0, 0.0])
    assert plan_cruise(g, d, 1, 605.0, params, fraction=1.0, fleet=busy).edges[0] == 2
    lone = plan_cruise(g, d, 1, 605.0, params, fraction=1.0)
    crowded = fleet_view(g, now_s=0.0, prior_per_h=[60.0, 0.0, 60.0, 0.0])
    withp = plan_cruise(g, d, 1, 605.0, params, fraction=1.0, fleet=crowded)
    assert withp.expected_revenue < lone.expected_revenue


def test_demand_alignment() -> None:
    g = figure_eight()
    out = demand_aligned(g, np.array([1.0, 2.0, 3.0, 4.0]), [3, 9, 0])
    assert out is not None and out.tolist() == [4.0, 0.0, 1.0]
    assert demand_aligned(g, None, [0]) is None
