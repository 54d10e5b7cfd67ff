"""Route stability (issue 15): the cab's own recent passes deplete the curbs in the values,
hysteresis and commitment keep the route, the countdown follows the route's progress."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.bundle import load_bundle
from agent.instruction import Instruction, Maneuver, advance
from agent.planner import (
    Plan,
    PlannerParams,
    action_values,
    is_committed,
    plan_cruise,
    route_value,
    solve,
)
from safety import ReversalCounter, stability
from tests.agent.test_planner import demand, figure_eight
from tiles.geo import LocalProjection, haversine_m
from tools.cli import main
from tools.field.replay import replay_tick


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
    assert all(a < b for a, b in itertools.pairwise(qs[:5]))  # recovers with age
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


# ---------------------------------------------------------------- countdown along the route
def _loop_instruction() -> tuple[Instruction, list[tuple[float, float]], float]:
    """A route east along a street, round the block, east along the same street again, then
    a turn: the second pass lies on the first (metres in a local projection -> lon, lat)."""
    proj = LocalProjection(-73.985, 40.758)
    xy = [(0, 0), (200, 0), (200, 100), (0, 100), (0, 0), (200, 0), (400, 0)]
    pts = [tuple(float(v) for v in proj.to_lonlat(x, y)) for x, y in xy]
    coords = tuple((round(p[0], 7), round(p[1], 7)) for p in pts)
    turn_m = 200 + 100 + 200 + 100 + 200 + 200.0
    m = Maneuver("turn", "right", turn_m, "2nd Avenue", *coords[-1], "")
    ins = Instruction(
        kind="route",
        time_s=0.0,
        message="",
        reason_codes=(),
        locale="en",
        route_edges=(1, 2, 3, 4, 1, 5),
        geometry=coords,
        maneuver=m,
        position=coords[0],
        heading_deg=90.0,
    )
    # the cab drives it at 10 m per fix, 3 m off the line, alternately either side
    fixes: list[tuple[float, float]] = []
    walked = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(xy):
        seg = math.hypot(x1 - x0, y1 - y0)
        for s in np.arange(10.0, seg + 1e-9, 10.0):
            f = s / seg
            side = 3.0 if len(fixes) % 2 else -3.0
            nx, ny = -(y1 - y0) / seg, (x1 - x0) / seg
            x, y = x0 + f * (x1 - x0) + side * nx, y0 + f * (y1 - y0) + side * ny
            fixes.append(tuple(float(v) for v in proj.to_lonlat(x, y)))  # type: ignore[arg-type]  # to_lonlat is typed for arrays, returns floats here
        walked += seg
    return ins, fixes, turn_m


def test_countdown_is_monotone_and_along_the_route_when_the_route_revisits_a_link() -> None:
    ins, fixes, turn_m = _loop_instruction()
    shown = []
    for lon, lat in fixes:
        ins = advance(ins, lon, lat, None)
        assert ins.maneuver is not None
        shown.append(ins.maneuver.distance_m)
    assert all(b <= a for a, b in itertools.pairwise(shown))  # never up
    truth = [max(turn_m - 10.0 * (i + 1), 0.0) for i in range(len(fixes))]
    assert max(abs(a - b) for a, b in zip(shown, truth, strict=True)) < 5.0
    # on the second pass of the street (after the block), 400 m before the turn, not 0 or 600
    assert shown[64] == pytest.approx(turn_m - 650.0, abs=5.0)


# ---------------------------------------------------------------- the figures and the log
def _route_tick(
    t: float, edges: list[int], key: tuple[str, str, float], **extra: object
) -> dict[str, Any]:
    modifier, street, lon = key
    return {
        "kind": "tick",
        "run_id": "r",
        "time_s": t,
        "instruction": {
            "kind": "route",
            "route_edges": edges,
            "maneuver": {
                "type": "turn",
                "modifier": modifier,
                "street": street,
                "location": [lon, 40.75],
                "distance_m": 100.0,
            },
            "geometry": {"coordinates": [[-73.99, 40.75], [-73.98, 40.75]]},
        },
        **extra,
    }


def test_stability_figures_count_repeats_reversals_and_countdown_errors() -> None:
    a, b = ("right", "E 34th St", -73.97), ("left", "E 33rd St", -73.975)
    recs = [
        _route_tick(0.0, [1, 2, 3], a),
        _route_tick(5.0, [1, 2, 1], b),  # a repeated link
        _route_tick(10.0, [1, 2, 3], a),  # A -> B -> A within 5 s: a reversal
        _route_tick(200.0, [2, 3], b),  # B again, but A was shown for 190 s: a change of mind
    ]
    # the countdown is logged with the next record: 20 m driven from the tick, 80 m left; 50 shown
    lon20 = -73.99 + 20.0 / float(haversine_m(-73.99, 40.75, -73.98, 40.75)) * 0.01
    fallback = {"kind": "fallback"}
    recs.append(
        {
            "kind": "tick",
            "run_id": "r",
            "time_s": 205.0,
            "instruction": fallback,
            "countdown": [[201.0, lon20, 40.75, 50.0]],
        }
    )
    recs.append({"kind": "stop", "run_id": "r", "countdown": [[206.0, lon20, 40.75, 0.0]]})
    rep = stability(recs)
    assert rep.route_ticks == 4 and rep.repeated_link_routes == 1
    assert rep.repeated_link_route_share == 0.25
    assert rep.reversals == 1 and rep.hours == pytest.approx(15.0 / 3600.0)  # gaps > 60 s out
    assert rep.reversals_per_h == pytest.approx(240.0)
    assert rep.countdown_checked == 1
    assert rep.countdown_max_error_m == pytest.approx(30.0, abs=0.5)  # |50 - 80|
    counter = ReversalCounter()
    assert [counter.add(t, k) for t, k in ((0, ("a",)), (5, ("b",)), (130, ("a",)))] == [
        False,
        False,
        False,  # B lasted 125 s
    ]


def test_the_drive_logs_its_passes_and_shown_route_and_replays_them(
    drive_run: dict[str, Any], manhattan_bundle: Path
) -> None:
    ticks = [r for r in drive_run["records"] if r.get("kind") == "tick"]
    assert sum(bool(r["last_pass_age_s"]) for r in ticks) > len(ticks) // 2
    assert sum(bool(r["previous_route"]) for r in ticks) > len(ticks) // 2
    # the meter is on from the 60th to the 150th tick: no pass is recorded meanwhile
    t_on = ticks[59]["time_s"]
    for r in ticks[61:150]:
        assert all(r["time_s"] - age <= t_on for _, age in r["last_pass_age_s"])
    # the figures of issue 15 on the drive
    rep = stability(drive_run["records"])
    assert rep.repeated_link_route_share is not None and rep.repeated_link_route_share < 0.05
    assert rep.reversals == 0
    assert rep.countdown_max_error_m is not None and rep.countdown_max_error_m <= 30.0
    # a kept route is what the inputs make it: replayed with them, identical; without, not
    lb = load_bundle(manhattan_bundle)
    kept = [
        r
        for r in ticks
        if r.get("plan")
        and (json.loads(r["plan"]).get("route_choice") or {}).get("reason") in ("kept", "committed")
    ]
    assert kept
    assert replay_tick(dict(kept[0]), lb).identical
    bare = dict(kept[0], previous_route=[], last_pass_age_s=[])
    assert not replay_tick(bare, lb).identical


def test_report_slo_prints_the_stability_figures(
    drive_run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "slo", "--logs", str(drive_run["data"] / "trips"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rep = stability(drive_run["records"])
    assert doc["repeated_link_route_share"] == rep.repeated_link_route_share
    assert doc["reversals_per_h"] == rep.reversals_per_h == 0.0
    assert doc["countdown_max_error_m"] == rep.countdown_max_error_m
    assert main(["report", "slo", "--logs", str(drive_run["data"] / "trips")]) == 0
    out = capsys.readouterr().out
    assert "repeated-link routes:" in out and "reversals:" in out and "countdown:" in out
