"""Route stability (issue 15): the cab's own recent passes deplete the curbs in the values,
hysteresis and commitment keep the route, the countdown follows the route's progress."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.planner import (
    Plan,
    PlannerParams,
    action_values,
    is_committed,
    plan_cruise,
    route_value,
    solve,
)
from tests.agent.test_planner import demand, figure_eight


def test_a_recent_pass_lowers_the_value_exactly_as_derived() -> None:
    g = figure_eight()
    params = PlannerParams(step_s=10.0, horizon_s=10.0, patience_s=300.0)
    tau = float(g.travel_time_s[0])
    for age in (0.0, 10.0, 120.0, 299.0):
        table = solve(g, demand(), 605.0, params, last_pass_age_s={0: age})
        p = 1.0 - math.exp(-30.0 * (tau + min(300.0, age)) / 3600.0)
        # from link 1 the cab may enter 0 (the hails) or 2 (none): V = P F on a one-layer horizon
        assert table.values[0, 1] == pytest.approx(p * 12.0, rel=1e-12)


def test_q_of_a_link_passed_10_s_ago_is_lower_and_recovers_as_the_pass_ages() -> None:
    g = figure_eight()  # 9 s links; 5 s layers keep them longer than a layer (no extrapolation)
    params = PlannerParams(horizon_s=600.0, step_s=5.0)
    d = demand((3.0, 0.0, 0.0, 0.0))
    links = np.array([0, 2], dtype=np.int64)
    q_fresh = float(action_values(solve(g, d, 605.0, params), 0, links)[0])
    qs = []
    for age in (10.0, 60.0, 150.0, 290.0, 300.0, 3600.0, math.inf):
        t = solve(g, d, 605.0, params, last_pass_age_s={0: age})
        qs.append(float(action_values(t, 0, links)[0]))
    assert qs[0] < q_fresh
    assert all(a < b for a, b in zip(qs[:4], qs[1:5], strict=True))  # recovers with age
    assert qs[4:] == [q_fresh] * 3  # W = 300 s: a pass that long ago is no pass
    # the table's values agree with the read-out's own-age evaluation of the same pass
    fresh = solve(g, d, 605.0, params)
    t10 = solve(g, d, 605.0, params, last_pass_age_s={0: 10.0})
    explicit = float(action_values(fresh, 0, links, np.array([10.0, math.inf]))[0])
    assert explicit < q_fresh
    # later layers: hails arriving after the pass have built up again (10 s + 58 x 5 s = W)
    assert action_values(t10, 58, links)[0] == float(action_values(fresh, 58, links)[0])
    assert action_values(t10, 57, links)[0] < float(action_values(fresh, 57, links)[0])


def test_pass_ages_as_an_array_or_a_mapping_are_the_same() -> None:
    g = figure_eight()
    ages = np.array([30.0, np.inf, 5.0, np.nan])
    a = solve(g, demand(), 605.0, PlannerParams(), last_pass_age_s=ages)
    b = solve(g, demand(), 605.0, PlannerParams(), last_pass_age_s={0: 30.0, 2: 5.0, 99: 1.0})
    assert np.array_equal(a.values, b.values)


# ---------------------------------------------------------------- hysteresis and commitment
BARE = PlannerParams(route_max_visits=0, route_min_m=0.0, route_min_s=30.0, horizon_s=60.0)


def _plan(rates: tuple[float, ...], previous: tuple[int, ...] | None, committed: int = 0) -> Plan:
    return plan_cruise(
        figure_eight(),
        demand(rates, dropoff_inside=1.0, trip_s=10.0),
        3,  # the cab on Q -> Y: it may enter loop one (link 0) or loop two (link 2)
        605.0,
        BARE,
        fraction=0.5,
        previous_route=previous,
        committed_links=committed,
    )


def test_hysteresis_keeps_the_route_against_a_marginally_better_one() -> None:
    fresh = _plan((30.0, 0.0, 27.0, 0.0), None)
    assert fresh.edges[0] == 0 and fresh.route_choice is None  # loop one is (a bit) better
    kept = _plan((30.0, 0.0, 27.0, 0.0), (2, 3))
    assert kept.route_choice is not None and kept.route_choice.reason == "kept"
    assert kept.edges[:2] == (2, 3)
    assert kept.route_choice.value_previous is not None
    gain = kept.route_choice.value_new - kept.route_choice.value_previous
    assert 0 < gain <= BARE.route_switch_margin * kept.route_choice.value_previous
    # the same new route as before is no change at all
    same = _plan((30.0, 0.0, 27.0, 0.0), fresh.edges)
    assert same.route_choice is not None and same.route_choice.reason == "same"
    assert same.edges == fresh.edges


def test_hysteresis_switches_for_a_clearly_better_route() -> None:
    switched = _plan((30.0, 0.0, 3.0, 0.0), (2, 3))
    assert switched.route_choice is not None and switched.route_choice.reason == "switched"
    assert switched.edges[0] == 0
    c = switched.route_choice
    assert c.value_previous is not None
    assert c.value_new > c.value_previous * (1 + BARE.route_switch_margin)


def test_no_reversal_of_a_committed_manoeuvre() -> None:
    committed = _plan((30.0, 0.0, 3.0, 0.0), (2, 3), committed=1)
    assert committed.route_choice is not None and committed.route_choice.reason == "committed"
    assert committed.edges[:2] == (2, 3)
    # a previous route the cab can no longer drive (no such turn) is not kept, committed or not
    broken = _plan((30.0, 0.0, 3.0, 0.0), (1, 3), committed=1)
    assert broken.route_choice is not None and broken.route_choice.reason == "new"


def test_commitment_is_a_few_seconds_or_metres_before_the_junction() -> None:
    p = PlannerParams()
    assert is_committed(20.0, None, p.route_commit_s, p.route_commit_m)  # metres alone
    assert is_committed(70.0, 10.0, p.route_commit_s, p.route_commit_m)  # 7 s at 10 m/s
    assert not is_committed(100.0, 10.0, p.route_commit_s, p.route_commit_m)
    assert not is_committed(math.inf, 10.0, p.route_commit_s, p.route_commit_m)


def test_route_value_of_the_read_out_is_the_table_value_without_passes() -> None:
    g = figure_eight()
    params = PlannerParams(route_max_visits=0)
    table = solve(g, demand((3.0, 0.0, 1.0, 0.0), dropoff_inside=1.0), 605.0, params)
    assert route_value(table, 3, 0.0, []) == float(table.values[0, 3])
    # one link by the policy, then the policy: Q of that link, as the read-out computes it
    q = action_values(table, 0, np.array([0, 2], dtype=np.int64), np.array([np.inf, np.inf]))
    assert route_value(table, 3, 0.0, [0]) == pytest.approx(float(q[0]), rel=1e-9)
