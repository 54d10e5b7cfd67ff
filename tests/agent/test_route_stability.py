"""Route stability (issue 15): the cab's own recent passes deplete the curbs in the values,
hysteresis and commitment keep the route, the countdown follows the route's progress."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.planner import PlannerParams, action_values, solve
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
