"""The planner on the real Manhattan and Shibuya tiles: safe by construction (Hypothesis over
positions and times), deterministic, and wired to the CLI and the benchmark."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.planner import (
    Plan,
    PlannerError,
    PlannerParams,
    area_mask,
    plan_cruise,
    plan_from_fix,
    speed_factor_from_demand,
)
from models import DemandTable, TickDemand, tick_demand_from_table
from tiles import TileStore
from tiles import tags as T
from tiles.graph import Graph

TIMES_SQUARE = (-73.98551, 40.75800)


def assert_legal(g: Graph, plan: Plan, params: PlannerParams, area: np.ndarray | None) -> None:
    """Every planned link follows a legal turn and may be cruised when the cab enters it."""
    start = int(g.local([plan.start_edge_id])[0])
    tau = g.travel_time_s / params.speed_factor
    t_min = plan.minute_of_week + (1.0 - plan.start_fraction) * float(tau[start]) / 60.0
    prev = start
    for gid in plan.edges:
        e = int(g.local([gid])[0])
        assert e >= 0, "a planned link outside the loaded graph"
        succ = g.turn_to[g.turn_offsets[prev] : g.turn_offsets[prev + 1]]
        assert gid in succ.tolist(), f"no legal turn from {g.edge_id[prev]} to {gid}"
        assert g.flags[e] & T.CRUISE_FORBIDDEN == 0, "motorway, private or pier link planned"
        assert not g.closed_at(math.floor(t_min))[e], "link planned inside its no-entry window"
        if area is not None:
            assert area[e], "link outside the business area planned"
        t_min += float(tau[e]) / 60.0
        prev = e


def adversarial(demand: TickDemand, g: Graph) -> TickDemand:
    """Demand boosted on the links a cab must never be sent to (motorway, private, pier,
    time-windowed): the planner must still avoid them."""
    loc = g.local(demand.edge_id)
    bad = np.zeros(demand.edge_id.shape[0], dtype=bool)
    ok = loc >= 0
    bad[ok] = (g.flags[loc[ok]] & (T.CRUISE_FORBIDDEN | T.FLAG_WINDOWS)) != 0
    rates = demand.pickups_per_h.copy()
    rates[:, bad] = rates[:, bad] * 50.0 + 500.0
    return dataclasses.replace(demand, pickups_per_h=rates)


def length_demand(g: Graph) -> TickDemand:
    """Shibuya has no trip records: a documented test demand, hails proportional to length
    (one an hour per 100 m), one cell, half the trips ending outside."""
    n = g.n
    return TickDemand(
        edge_id=g.edge_id.astype(np.int32),
        slot_minute_of_week=np.arange(0, 7 * 1440, 30, dtype=np.int64),
        pickups_per_h=np.tile((g.length_m / 100.0).astype(np.float32), (7 * 48, 1)),
        fare_mean=np.full(n, 1500.0, dtype=np.float32),
        trip_duration_s=np.full(n, 900.0, dtype=np.float32),
        cell=np.zeros(n, dtype=np.int32),
        dropoff=np.array([[0.5, 0.5]], dtype=np.float32),
        source="test:length",
    )


@pytest.fixture(scope="module")
def shibuya(shibuya_tiles: Path) -> Iterator[TileStore]:
    store = TileStore(shibuya_tiles)
    yield store
    store.close()


def test_plan_at_times_square(manhattan: tuple[TileStore, DemandTable]) -> None:
    store, table = manhattan
    params = PlannerParams(speed_factor=speed_factor_from_demand(table, store.all()))
    minute = 1 * 1440 + 18 * 60 + 5  # Tuesday 18:05
    plan = plan_from_fix(store, table, *TIMES_SQUARE, 180.0, minute, params)
    assert plan.length_m >= params.route_min_m or plan.duration_s >= params.route_min_s
    assert plan.expected_revenue > 0 and plan.expected_revenue_per_h > 0
    assert plan.directions and all(d.street for d in plan.directions)
    g = store.radius_graph(*TIMES_SQUARE, params.radius_m)
    assert_legal(g, plan, params, None)
    again = plan_from_fix(store, table, *TIMES_SQUARE, 180.0, minute, params)
    assert again.to_json() == plan.to_json()
    doc = json.loads(plan.to_json())
    assert doc["schema_version"] == 1 and doc["params"]["horizon_s"] == 2700.0


def test_business_area_polygon_bounds_the_plan(manhattan: tuple[TileStore, DemandTable]) -> None:
    import shapely

    store, table = manhattan
    params = PlannerParams(speed_factor=0.37)
    # a business area: the blocks within ~600 m of Times Square
    area_poly = shapely.box(-73.9930, 40.7530, -73.9780, 40.7630)
    g = store.radius_graph(*TIMES_SQUARE, params.radius_m)
    mask = area_mask(g, area_poly)
    inside = shapely.contains_xy(area_poly, g.u_lon, g.u_lat) & shapely.contains_xy(
        area_poly, g.v_lon, g.v_lat
    )
    assert mask.dtype == bool and np.array_equal(mask, inside) and 0 < mask.sum() < g.n
    plan = plan_from_fix(
        store, table, *TIMES_SQUARE, 180.0, 1 * 1440 + 1085, params, area_polygon=area_poly
    )
    assert plan.edges
    assert_legal(g, plan, params, mask)


def test_demand_of_another_network_is_refused(
    manhattan: tuple[TileStore, DemandTable], shibuya: TileStore
) -> None:
    _, table = manhattan
    with pytest.raises(PlannerError, match="another road network"):
        plan_from_fix(shibuya, table, 139.7016, 35.6580, None, 600.0)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pick=st.floats(0.0, 1.0, allow_nan=False, exclude_max=True),
    fraction=st.floats(0.0, 1.0),
    minute=st.floats(0.0, 7 * 1440.0 - 1, allow_nan=False),
    radius=st.sampled_from([800.0, 3000.0]),
)
def test_manhattan_plans_only_legal_allowed_links(
    manhattan: tuple[TileStore, DemandTable],
    pick: float,
    fraction: float,
    minute: float,
    radius: float,
) -> None:
    store, table = manhattan
    full = store.all()
    e = int(full.edge_id[int(pick * full.n)])
    lon = float(full.u_lon[full.local([e])[0]])
    lat = float(full.u_lat[full.local([e])[0]])
    g = store.radius_graph(lon, lat, radius)
    params = PlannerParams(radius_m=radius, speed_factor=0.37)
    demand = adversarial(tick_demand_from_table(table, g.edge_id, int(minute), 46), g)
    # a business area: the links west of the cab only (a polygon-free mask)
    area = np.asarray(g.u_lon <= lon + 0.004) & np.asarray(g.v_lon <= lon + 0.004)
    plan = plan_cruise(g, demand, e, minute, params, fraction=fraction, area=area)
    assert_legal(g, plan, params, area)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pick=st.floats(0.0, 1.0, allow_nan=False, exclude_max=True),
    minute=st.floats(0.0, 7 * 1440.0 - 1, allow_nan=False),
)
def test_shibuya_plans_only_legal_allowed_links(
    shibuya: TileStore, pick: float, minute: float
) -> None:
    g = shibuya.all()
    e = int(g.edge_id[int(pick * g.n)])
    params = PlannerParams(speed_factor=0.5)
    plan = plan_cruise(g, adversarial(length_demand(g), g), e, minute, params)
    assert_legal(g, plan, params, None)


def test_shibuya_windows_are_honoured_when_closed(shibuya: TileStore) -> None:
    """Pick a time-windowed link and plan from a predecessor while it is closed."""
    g = shibuya.all()
    windowed = np.flatnonzero(g.local(g.win_edge) >= 0)
    assert windowed.size, "the Shibuya extract has time-windowed links"
    target = int(g.local([g.win_edge[windowed[0]]])[0])
    minute = float(g.win_start[windowed[0]]) + 1.0
    src, dst = g.turn_pairs
    preds = src[dst == target]
    assert preds.size
    demand = adversarial(length_demand(g), g)
    for p in preds.tolist():
        plan = plan_cruise(g, demand, int(g.edge_id[p]), minute, PlannerParams(speed_factor=0.5))
        assert_legal(g, plan, PlannerParams(speed_factor=0.5), None)


def test_cruise_cli_json_is_canonical(
    manhattan_tiles: Path, manhattan_demand: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tools.cli import main

    argv = [
        "cruise",
        "--bundle-or-tiles",
        str(manhattan_tiles),
        "--demand",
        str(manhattan_demand),
        "--at",
        "-73.98551,40.75800",
        "--heading",
        "200",
        "--time",
        "2015-06-02T18:05",
        "--json",
    ]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first
    doc = json.loads(first)
    assert doc["edges"] and doc["directions"]
    assert main(argv[:-1]) == 0
    assert "expected revenue" in capsys.readouterr().out
    assert main([*argv[:5], "--at", "1,2", "--time", "2015-06-02T18:05"]) == 2


def test_bench_cruise_reports_its_figures(manhattan_tiles: Path, manhattan_demand: Path) -> None:
    from agent import bench_cruise

    p = argparse.ArgumentParser()
    bench_cruise.add_arguments(p)
    args = p.parse_args(
        ["--tiles", str(manhattan_tiles), "--demand", str(manhattan_demand), "--cases", "4"]
    )
    out = bench_cruise.run(args)
    assert out["cases"] == 4
    for key in (
        "plan_ms_p50",
        "plan_ms_p95",
        "plan_warm_ms_p50",
        "kernel_ms_p50",
        "backward_numpy_ms_p50",
    ):
        assert out[key] > 0
    assert out["peak_rss_mb"] > 0 and out["layers_p50"] == 270
    assert out["ratio_plan_to_kernel_p50"] == pytest.approx(
        out["plan_ms_p50"] / out["kernel_ms_p50"], rel=0.02
    )
    assert out["ratio_plan_warm_to_kernel_p50"] == pytest.approx(
        out["plan_warm_ms_p50"] / out["kernel_ms_p50"], rel=0.02
    )
    if out["backward_pass"] != "numpy":  # the compiled path and the numpy one, same plans
        assert out["plans_bit_identical"] == "4/4" and out["backward_ms_p50"] > 0
        # and against the compiled minimal kernel, the compiled pass's own peer
        assert out["kernel_numba_ms_p50"] > 0
        assert out["ratio_backward_to_kernel_numba_p50"] == pytest.approx(
            out["backward_ms_p50"] / out["kernel_numba_ms_p50"], rel=0.02
        )


def test_cruise_cli_reads_a_bundle_directory(
    manhattan_tiles: Path,
    manhattan_demand: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """tiles.sqlite, demand/, the planner section of params.yaml and area.geojson."""
    import shutil

    from tools.cli import main

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.yaml").write_text("schema_version: 1\n")
    shutil.copy(manhattan_tiles, bundle / "tiles.sqlite")
    shutil.copytree(manhattan_demand, bundle / "demand")
    (bundle / "params.yaml").write_text("planner:\n  speed_factor: 0.4\n  horizon_s: 1800\n")
    box = [[-73.9930, 40.7530], [-73.9780, 40.7530], [-73.9780, 40.7630], [-73.9930, 40.7630]]
    area = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {},
                "geometry": {"type": "Polygon", "coordinates": [[*box, box[0]]]},
            }
        ],
    }
    (bundle / "area.geojson").write_text(json.dumps(area))
    argv = ["cruise", "--bundle-or-tiles", str(bundle), "--at", "-73.98551,40.75800"]
    assert main([*argv, "--time", "2015-06-02T18:05", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["params"]["speed_factor"] == 0.4 and doc["params"]["horizon_s"] == 1800
    with TileStore(bundle / "tiles.sqlite") as store:
        g = store.all()
        lon = (g.u_lon + g.v_lon) / 2
        lat = (g.u_lat + g.v_lat) / 2
        mid = {int(i): (x, y) for i, x, y in zip(g.edge_id, lon, lat, strict=True)}
    for e in doc["edges"]:
        x, y = mid[e]
        assert -73.9930 <= x <= -73.9780 and 40.7530 <= y <= 40.7630
    # a parameter of a newer planner: ignored with a warning, as the agent does with the bundle
    (bundle / "params.yaml").write_text("planner:\n  warp_drive: 9\n")
    assert main([*argv, "--time", "2015-06-02T18:05"]) == 0
    assert "unknown planner parameter(s) ignored: warp_drive" in caplog.text
    # a known one of the wrong type: one line, exit 2
    (bundle / "params.yaml").write_text("planner:\n  horizon_s: soon\n")
    assert main([*argv, "--time", "2015-06-02T18:05"]) == 2
    assert "planner.horizon_s must be a number" in capsys.readouterr().err


def test_city_is_districts_of_the_real_extract_side_by_side(
    manhattan_tiles: Path, manhattan_demand: Path
) -> None:
    """bench cruise --case city: every district keeps the extract's links, turns and demand."""
    from agent._bench_city import DISTRICT_SHIFT_MIN, city_demand, city_graph

    table = DemandTable.load(manhattan_demand)
    with TileStore(manhattan_tiles) as store:
        district = store.all()
    city = city_graph(district, 3)
    n = district.n_edges_total
    assert city.n == 3 * district.n and city.n_edges_total == 3 * n
    assert np.all(np.diff(city.edge_id) > 0)
    src, dst = district.turn_pairs
    csrc, cdst = city.turn_pairs
    pairs = {(int(a), int(b)) for a, b in zip(csrc, cdst, strict=True)}
    want = {(int(a) + i * district.n, int(b) + i * district.n) for i in range(3) for a, b in
            zip(src, dst, strict=True)}  # fmt: skip
    assert pairs == want  # no turn between districts, none lost
    assert city.u_lon[2 * district.n :].min() > district.u_lon.max()  # side by side, no overlap
    minute = 2 * 1440 + 8 * 60 + 5.0  # Wednesday 08:05
    demand = city_demand(table, district, 3, minute, 2700.0)
    for i in range(3):
        alone = tick_demand_from_table(
            table, district.edge_id, math.floor(minute) + i * DISTRICT_SHIFT_MIN, 47
        )
        part = slice(i * district.n, (i + 1) * district.n)
        assert np.array_equal(demand.edge_id[part], alone.edge_id + i * n)
        assert np.array_equal(demand.pickups_per_h[:, part], alone.pickups_per_h)
        c = alone.dropoff.shape[0]
        block = demand.dropoff[i * c : (i + 1) * c]
        assert np.array_equal(block[:, i * c : (i + 1) * c], alone.dropoff[:, :c])
        assert np.array_equal(block[:, -1], alone.dropoff[:, -1])
    assert np.allclose(demand.dropoff.sum(axis=1), 1.0, atol=1e-5)


def test_bench_cruise_city_case_reports_its_figures(
    manhattan_tiles: Path, manhattan_demand: Path
) -> None:
    from agent import bench_cruise

    p = argparse.ArgumentParser()
    bench_cruise.add_arguments(p)
    inputs = ["--tiles", str(manhattan_tiles), "--demand", str(manhattan_demand)]
    args = p.parse_args([*inputs, "--case", "city", "--districts", "2", "--cases", "2"])
    out = bench_cruise.run(args)
    with TileStore(manhattan_tiles) as store:
        n = store.all().n
    assert out["case"] == "city" and out["city_links"] == 2 * n
    assert out["links_in_radius_p50"] == 2 * n and out["layers_p50"] == 270
    assert out["plan_ms_p50"] > 0 and out["demand_cut_ms_p50"] > 0 and out["goal_p95_ms"] == 100
    # the agent's path alone, in its own process: imports < warmed up <= loaded <= peak
    assert 0 < out["agent_rss_mb_imports"] <= out["agent_rss_mb_city_loaded"]
    assert out["agent_rss_mb_city_loaded"] <= out["agent_peak_rss_mb"]
    assert out["agent_workspace_mb"] > 0 and out["agent_step_s"] == 20.0  # as bundles ship
    if out["backward_pass"] != "numpy":
        assert out["plans_bit_identical"] == "2/2"


def test_the_agent_memory_child_reports_its_own_peak_not_its_parents(
    manhattan_tiles: Path, manhattan_demand: Path
) -> None:
    """The child is spawned (fork, then exec): ``ru_maxrss`` would carry the parent's peak
    into it. With 300 MB more held here, the child's peak must stay far below that."""
    from agent import bench_cruise

    p = argparse.ArgumentParser()
    bench_cruise.add_arguments(p)
    args = p.parse_args(
        ["--tiles", str(manhattan_tiles), "--demand", str(manhattan_demand), "--case", "city",
         "--districts", "1", "--cases", "1"]
    )  # fmt: skip
    ballast = np.ones(37_500_000)  # 300 MB, written: resident (this process holds more)
    got = bench_cruise.agent_memory(args, manhattan_tiles, manhattan_demand)
    assert float(ballast[-1]) == 1.0
    assert got["agent_rss_mb_city_loaded"] <= got["agent_peak_rss_mb"] < 380.0
