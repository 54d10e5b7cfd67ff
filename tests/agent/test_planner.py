"""The cruising planner's mathematics on a hand-built graph (fakes, not mocks): exact values,
legality, time windows, business area, supply, drop-off continuation, determinism."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from agent.planner import (
    Plan,
    PlannerError,
    PlannerParams,
    plan_cruise,
    policy_step,
    solve,
)
from models.demand import TickDemand
from tiles.geo import bearing_deg, haversine_m
from tiles.graph import Graph
from tiles.tags import FLAG_PRIVATE, HIGHWAY_CODE

# A figure eight at junction Y: loop one Y->P->Y (links 0, 1), loop two Y->Q->Y (links 2, 3).
Y = (139.7000, 35.6600)
P = (139.7010, 35.6600)
Q = (139.6990, 35.6600)
ENDS = [(Y, P), (P, Y), (Y, Q), (Q, Y)]
TURNS = {0: [1], 1: [0, 2], 2: [3], 3: [0, 2]}
SPEED_KPH = 36.0


def figure_eight(
    flags: tuple[int, ...] = (0, 0, 0, 0),
    windows: tuple[tuple[int, int, int], ...] = (),
) -> Graph:
    u = np.array([a for a, _ in ENDS], dtype=np.float64)
    v = np.array([b for _, b in ENDS], dtype=np.float64)
    nodes = {Y: 0, P: 1, Q: 2}
    length = haversine_m(u[:, 0], u[:, 1], v[:, 0], v[:, 1]).astype(np.float32)
    bearing = bearing_deg(u[:, 0], u[:, 1], v[:, 0], v[:, 1]).astype(np.float32)
    turn_to = [t for e in range(4) for t in TURNS[e]]
    offsets = np.concatenate([[0], np.cumsum([len(TURNS[e]) for e in range(4)])])
    return Graph(
        edge_id=np.arange(4, dtype=np.int32),
        u_lon=u[:, 0].copy(),
        u_lat=u[:, 1].copy(),
        v_lon=v[:, 0].copy(),
        v_lat=v[:, 1].copy(),
        u_node=np.array([nodes[a] for a, _ in ENDS], dtype=np.int32),
        v_node=np.array([nodes[b] for _, b in ENDS], dtype=np.int32),
        way_id=np.array([10, 10, 20, 20], dtype=np.int64),
        length_m=length,
        speed_kph=np.full(4, SPEED_KPH, dtype=np.float32),
        highway=np.full(4, HIGHWAY_CODE["residential"], dtype=np.uint8),
        flags=np.array(flags, dtype=np.uint16),
        bearing_start=bearing,
        bearing_end=bearing,
        geom_offsets=np.arange(0, 10, 2, dtype=np.int64),
        geom_lonlat=np.stack([u, v], axis=1).reshape(-1, 2),
        turn_offsets=offsets.astype(np.int64),
        turn_to=np.array(turn_to, dtype=np.int32),
        win_edge=np.array([w[0] for w in windows], dtype=np.int32),
        win_start=np.array([w[1] for w in windows], dtype=np.int16),
        win_end=np.array([w[2] for w in windows], dtype=np.int16),
        n_edges_total=4,
    )


def demand(
    rates: tuple[float, ...] = (30.0, 0.0, 0.0, 0.0),
    fare: float = 12.0,
    trip_s: float = 600.0,
    dropoff_inside: float = 0.0,
) -> TickDemand:
    return TickDemand(
        edge_id=np.arange(4, dtype=np.int32),
        slot_minute_of_week=np.array([600, 630, 660, 690], dtype=np.int64),
        pickups_per_h=np.tile(np.array(rates, dtype=np.float32), (4, 1)),
        fare_mean=np.full(4, fare, dtype=np.float32),
        trip_duration_s=np.full(4, trip_s, dtype=np.float32),
        cell=np.zeros(4, dtype=np.int32),
        dropoff=np.array([[dropoff_inside, 1.0 - dropoff_inside]], dtype=np.float32),
        source="test:figure-eight",
    )


def test_one_layer_value_is_pickup_probability_times_fare() -> None:
    g = figure_eight()
    params = PlannerParams(step_s=10.0, horizon_s=10.0, patience_s=300.0)
    table = solve(g, demand(), 605.0, params)
    tau = float(g.travel_time_s[0])
    p = 1.0 - math.exp(-30.0 * (tau + 300.0) / 3600.0)
    assert table.values[0, 1] == pytest.approx(p * 12.0, rel=1e-12)
    # from link 0 the only successor (1) has no demand
    assert table.values[0, 0] == pytest.approx(0.0, abs=1e-12)


def test_driving_cost_is_subtracted() -> None:
    g = figure_eight()
    base = PlannerParams(step_s=10.0, horizon_s=10.0)
    costly = dataclasses.replace(base, cost_per_m=0.001, cost_per_s=0.002)
    v0 = solve(g, demand(), 605.0, base).values[0, 1]
    v1 = solve(g, demand(), 605.0, costly).values[0, 1]
    tau = float(g.travel_time_s[0])
    assert v0 - v1 == pytest.approx(0.001 * float(g.length_m[0]) + 0.002 * tau, rel=1e-9)


def test_goes_where_the_hails_are() -> None:
    g = figure_eight()
    for rates, best in (((3.0, 0, 0, 0), 0), ((0, 0, 3.0, 0), 2)):
        # drop-offs back in the area: a pickup does not end the cab's earnings (with drop-offs
        # outside and a short horizon, one fare is all there is and when to take it is a tie)
        table = solve(g, demand(rates, dropoff_inside=1.0), 605.0, PlannerParams())
        assert policy_step(table, 1, 0.0) == best
        assert policy_step(table, 3, 0.0) == best


def test_competing_supply_lowers_the_value() -> None:
    g = figure_eight()
    values = [
        solve(g, demand(), 605.0, PlannerParams(competing_vacant_per_h=nu)).values[0, 1]
        for nu in (0.0, 10.0, 100.0)
    ]
    assert values[0] > values[1] > values[2] > 0.0


def test_dropoff_continuation_adds_value() -> None:
    g = figure_eight()
    params = PlannerParams(horizon_s=1800.0)
    inside = solve(g, demand(dropoff_inside=1.0), 605.0, params).values[0, 1]
    outside = solve(g, demand(dropoff_inside=0.0), 605.0, params).values[0, 1]
    assert inside > outside
    shared = dataclasses.replace(params, outside_value_share=1.0)
    outside_valued = solve(g, demand(dropoff_inside=0.0), 605.0, shared).values[0, 1]
    assert outside_valued == pytest.approx(inside, rel=1e-9)


def test_value_grows_with_the_horizon() -> None:
    g = figure_eight()
    v = [
        solve(g, demand(dropoff_inside=1.0), 605.0, PlannerParams(horizon_s=h)).values[0, 1]
        for h in (600.0, 1200.0, 2400.0)
    ]
    assert v[0] < v[1] < v[2]


def test_never_enters_a_link_inside_its_no_entry_window() -> None:
    # link 0 (all the demand) closed 10:00-11:00 on Monday (minutes of week 600-660)
    g = figure_eight(windows=((0, 600, 660),))
    table = solve(g, demand(), 605.0, PlannerParams())
    assert policy_step(table, 1, 0.0) == 2
    # an hour later the window has ended: the planner goes back to link 0
    assert policy_step(table, 1, 3600.0) == 0
    plan = plan_cruise(g, demand(), 1, 605.0, PlannerParams(route_min_s=600.0))
    t_min = 605.0 + float(g.travel_time_s[1]) / 60.0
    for e in plan.edges:
        if e == 0:
            assert t_min >= 660.0
        t_min += float(g.travel_time_s[e]) / 60.0


def test_never_enters_private_links_or_links_outside_the_area() -> None:
    g = figure_eight(flags=(FLAG_PRIVATE, 0, 0, 0))
    plan = plan_cruise(g, demand(), 1, 605.0, PlannerParams())
    assert 0 not in plan.edges and plan.edges
    g2 = figure_eight()
    area = np.array([False, True, True, True])
    plan2 = plan_cruise(g2, demand(), 1, 605.0, PlannerParams(), area=area)
    assert 0 not in plan2.edges and plan2.edges


def test_no_allowed_successor_gives_an_empty_route() -> None:
    g = figure_eight(flags=(FLAG_PRIVATE, 0, FLAG_PRIVATE, 0))
    plan = plan_cruise(g, demand(), 1, 605.0, PlannerParams())
    assert plan.edges == ()
    assert plan.directions == ()


def test_route_is_long_enough_and_follows_legal_turns() -> None:
    g = figure_eight()
    # the bare policy (each loop of the figure eight is a U-turn at its far end)
    params = PlannerParams(speed_factor=0.5, route_max_visits=0)
    plan = plan_cruise(g, demand((10.0, 1.0, 5.0, 1.0)), 3, 605.0, params, fraction=0.25)
    assert plan.length_m >= params.route_min_m or plan.duration_s >= params.route_min_s
    prev = 3
    for e in plan.edges:
        assert e in TURNS[prev]
        prev = e
    assert plan.coordinates[0] == pytest.approx((Q[0] + 0.25 * (Y[0] - Q[0]), Y[1]))
    assert len(plan.pickup_probability) == len(plan.edges)
    assert plan.expected_revenue > 0.0
    assert plan.expected_revenue_per_h == pytest.approx(
        plan.expected_revenue / (params.horizon_s / 3600.0), rel=1e-9
    )


def test_directions_name_streets_and_turns() -> None:
    g = figure_eight()
    names = {10: "Loop One", 20: "Loop Two"}
    plan = plan_cruise(
        g,
        demand((0, 0, 3.0, 0), dropoff_inside=1.0),
        1,
        605.0,
        PlannerParams(route_min_m=1.0, route_min_s=0.0),
        way_names=lambda ids: {w: names[w] for w in ids},
    )
    assert plan.edges == (2,)
    (d,) = plan.directions
    # 1 runs west, 2 runs west too: straight on, onto Loop Two
    assert d.street == "Loop Two" and d.action == "depart" and abs(d.turn_deg) < 1.0


def test_same_inputs_give_identical_bytes() -> None:
    bare = PlannerParams(route_max_visits=0)
    runs = [
        plan_cruise(figure_eight(), demand((10.0, 2.0, 7.0, 1.0)), 3, 612.5, bare) for _ in range(2)
    ]
    assert runs[0].to_json() == runs[1].to_json()
    assert isinstance(runs[0], Plan)
    other = plan_cruise(figure_eight(), demand((10.0, 2.0, 7.5, 1.0)), 3, 612.5, bare)
    assert other.to_json() != runs[0].to_json()


def test_route_read_out_makes_no_u_turn_and_no_third_visit() -> None:
    """The read-out shows what safety/ shows: on the figure eight every way on from P or Q is
    back along the link the cab came by (a U-turn), so the route ends there; the bare policy
    (``route_max_visits=0``) keeps circling."""
    g = figure_eight()
    d = demand((10.0, 1.0, 5.0, 1.0))
    plan = plan_cruise(g, d, 3, 605.0, PlannerParams(speed_factor=0.5), fraction=0.25)
    # from Q->Y (3): Y->P (0) or Y->Q (2, a U-turn); then P->Y (1) would be a U-turn too
    assert plan.edges == (0,)
    bare = plan_cruise(
        g, d, 3, 605.0, PlannerParams(speed_factor=0.5, route_max_visits=0), fraction=0.25
    )
    assert bare.edges[:1] == (0,) and len(bare.edges) > 4
    counts = {e: [3, *bare.edges].count(e) for e in range(4)}
    assert max(counts.values()) > 2  # what the read-out now refuses


def test_unknown_start_link_and_bad_parameters_are_rejected() -> None:
    with pytest.raises(PlannerError):
        plan_cruise(figure_eight(), demand(), 99, 605.0, PlannerParams())
    with pytest.raises(ValueError, match="horizon_s"):
        PlannerParams(horizon_s=5.0 * 3600)
    with pytest.raises(ValueError, match="speed_factor"):
        PlannerParams(speed_factor=0.0)
    with pytest.raises(ValueError, match="route_max_visits"):
        PlannerParams(route_max_visits=-1)


def test_params_yaml_planner_section_is_parsed_one_way(caplog: pytest.LogCaptureFixture) -> None:
    base = PlannerParams()
    got = PlannerParams.from_mapping({"horizon_s": 1800, "from_a_newer_planner": 1}, base=base)
    assert got.horizon_s == 1800.0 and got.radius_m == base.radius_m
    assert "from_a_newer_planner" in caplog.text  # ignored, and said so
    for raw, why in (
        ([1, 2], "planner must be a mapping"),
        ({"horizon_s": "long"}, "planner.horizon_s must be a number"),
        ({"route_max_visits": 1.5}, "planner.route_max_visits must be a whole number"),
        ({"speed_factor": True}, "planner.speed_factor must be a number"),
        ({"radius_m": -1}, "invalid planner parameters: radius_m"),
    ):
        with pytest.raises(ValueError, match=why) as e:
            PlannerParams.from_mapping(raw, where="b/params.yaml")
        assert str(e.value).startswith("b/params.yaml: ") and "\n" not in str(e.value)


def test_public_holiday_window_is_judged_on_the_real_date() -> None:
    """Link 0 (all the demand) is closed 11:00-12:00 on public holidays only: at 11:05 on
    勤労感謝の日 (Monday 2026-11-23) the planner keeps out of it; on the next Monday, and in an
    ordinary week (no date given), it goes back there as soon as it can."""
    import datetime as dt

    from tiles.conditional import Area
    from tiles.graph import DatedRules

    rules = DatedRules(
        edge=np.array([0], dtype=np.int32),
        rules=((("no @ (PH 11:00-12:00)", "access"),),),
        area=Area(country="JP"),
    )
    g = dataclasses.replace(figure_eight(), dated=rules)
    holiday = solve(g, demand(), 605.0, PlannerParams(), monday=dt.date(2026, 11, 23))
    assert policy_step(holiday, 1, 3600.0) == 2
    ordinary = solve(g, demand(), 605.0, PlannerParams(), monday=dt.date(2026, 11, 30))
    assert policy_step(ordinary, 1, 3600.0) == 0
    assert policy_step(solve(g, demand(), 605.0, PlannerParams()), 1, 3600.0) == 0
    plan = plan_cruise(
        g, demand(), 1, 605.0, PlannerParams(route_min_s=3600.0), monday=dt.date(2026, 11, 23)
    )
    t_min = 605.0 + float(g.travel_time_s[1]) / 60.0
    for e in plan.edges:
        if e == 0:
            assert not 660.0 <= t_min < 720.0
        t_min += float(g.travel_time_s[e]) / 60.0


def test_monday_of_a_local_time() -> None:
    import datetime as dt

    from agent.planner import minute_of_week_of, monday_of

    when = dt.datetime(2026, 11, 26, 10, 30)  # a Thursday
    assert monday_of(when) == dt.date(2026, 11, 23)
    assert monday_of(dt.datetime(2026, 11, 23, 0, 0)) == dt.date(2026, 11, 23)
    assert monday_of(dt.datetime(2026, 11, 29, 23, 59)) == dt.date(2026, 11, 23)
    assert minute_of_week_of(when) == 3 * 1440 + 10 * 60 + 30
