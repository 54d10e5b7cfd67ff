"""Real passengers replayed on held-out days (the Uber April 2014 month over the real Manhattan
tiles), the leakage guard, dispatch matching, the paired gate, ``--jobs`` and ``--taxis auto``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse.csgraph import dijkstra

from agent.planner import speed_factor_from_demand
from models import DemandTable
from models.snap import snap_pickups
from models.statistics import build_demand_table, network_bbox
from models.trips import Trips
from tests.conftest import TRIPS
from tiles import TileStore
from tools.sim.engine import DROPOFF, run_shift
from tools.sim.experiment import OCCUPANCY_BAND, gate, paired_gain, run_seeds, size_fleet
from tools.sim.policies import Allowed
from tools.sim.replay import Replay, load_replay, replay_passengers
from tools.sim.result import RunResult
from tools.sim.world import Passengers, SimConfig, World, build_world

UBER = TRIPS["uber_2014_04"]
DAY = dt.date(2014, 4, 22)  # a Tuesday, held out
START_MIN = 17 * 60  # 17:00, the evening peak
HOURS = 0.25


@pytest.fixture(scope="module")
def demand_dir(tmp_path_factory: pytest.TempPathFactory, manhattan_tiles: Path) -> Path:
    """Demand from the first twenty days of the month only (rates), fares from the TLC trips."""
    out = tmp_path_factory.mktemp("demand-april")
    days = frozenset(dt.date(2014, 4, 1) + dt.timedelta(days=k) for k in range(20))
    with TileStore(manhattan_tiles) as store:
        table, _ = build_demand_table(store, [UBER, TRIPS["reuven_2015_06"]], days=days)
    table.save(out)
    return out


@pytest.fixture(scope="module")
def setting(manhattan_tiles: Path, demand_dir: Path) -> tuple[World, Replay]:
    table = DemandTable.load(demand_dir)
    with TileStore(manhattan_tiles) as store:
        g = store.all()
    replay = load_replay(g, table, [UBER], frozenset({DAY}), START_MIN, HOURS)
    config = SimConfig(
        taxis=6,
        test_taxis=6,
        hours=HOURS,
        start_minute_of_week=replay.days[0].start_minute_of_week,
    )
    world = build_world(g, table, config, speed_factor_from_demand(table, g), replay.share)
    return world, replay


def test_replay_has_one_passenger_per_record_of_the_day(
    setting: tuple[World, Replay], uber_april_trips: Trips
) -> None:
    world, replay = setting
    # the records of the file on that day and in that window, inside the area, that snap
    bbox = network_bbox(world.table.grid)
    t = uber_april_trips
    t0 = (dt.datetime.combine(DAY, dt.time(17, 0)) - dt.datetime(1970, 1, 1)).total_seconds()
    inside = (t.lon >= bbox[0]) & (t.lat >= bbox[1]) & (t.lon <= bbox[2]) & (t.lat <= bbox[3])
    window = inside & (t.pickup_s >= t0) & (t.pickup_s < t0 + HOURS * 3600)
    snapped = snap_pickups(
        world.graph, t.lon[window], t.lat[window], t.lon[window] * np.nan, t.lat[window] * np.nan
    )
    expected = int(snapped.ok.sum())
    assert expected > 100
    assert replay.records == expected and replay.days[0].count == expected
    assert replay.not_snapped == int((~snapped.ok).sum())
    assert not replay.in_sample and replay.to_json()["in_sample"] is False
    # the passengers are the records, at their recorded times, whatever the seed
    a = replay_passengers(world, replay.days[0], 0)
    b = replay_passengers(world, replay.days[0], 1)
    assert a.count == b.count == expected
    assert np.array_equal(np.sort(a.arrive_s), np.sort(replay.days[0].t_s))
    assert np.array_equal(np.sort(a.arrive_s), np.sort(t.pickup_s[window][snapped.ok] - t0))
    assert np.array_equal(a.link, b.link) and np.array_equal(a.arrive_s, b.arrive_s)
    # what the Uber records lack is drawn per seed: fares and patience differ, all positive
    assert not np.array_equal(a.fare, b.fare) and not np.array_equal(a.leave_s, b.leave_s)
    assert np.all(a.fare > 0) and np.all(a.duration_s >= 60) and np.all(a.leave_s >= a.arrive_s)
    # a day's passengers do not depend on the other days read with it
    both = load_replay(
        world.graph, world.table, [UBER], frozenset({DAY, DAY + dt.timedelta(days=1)}),
        START_MIN, HOURS,
    )  # fmt: skip
    same = both.days[0]
    assert same.day == DAY and np.array_equal(same.link, replay.days[0].link)
    assert np.array_equal(same.t_s, replay.days[0].t_s)
    # every one of them is in the run: served, expired or still waiting at the end
    run = run_shift(world, a, "hotspot", 0, 1.0)
    assert run.passengers == expected
    assert run.served + run.expired <= expected


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from tools.cli import main

    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_replaying_a_day_of_the_demand_is_refused_unless_allowed(
    manhattan_tiles: Path,
    demand_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["simulate", "--tiles", str(manhattan_tiles), "--demand", str(demand_dir),
            "--passengers", str(UBER), "--start", "2014-04-01T17:00", "--hours", "0.1",
            "--taxis", "4", "--test-taxis", "4", "--seeds", "2", "--policy", "nagashi",
            "--json"]  # fmt: skip
    rc, out, err = _cli([*base, "--days", "2014-04-20,2014-04-22"], capsys)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "2014-04-20" in err and "--allow-in-sample" in err
    assert "2014-04-22" not in err  # only the leaked day is named
    png = tmp_path / "adoption.png"
    allowed = ["--days", "2014-04-20", "--allow-in-sample", "--gate", "--gate-policy", "nagashi",
               "--adoption", "0.5,1.0"]  # fmt: skip
    rc, out, err = _cli([*base, *allowed, "--adoption-plot", str(png)], capsys)
    assert rc in (0, 1)
    doc = json.loads(out)
    assert doc["passengers"]["in_sample"] is True
    assert doc["passengers"]["days"] == ["2014-04-20"]
    assert doc["demand_days"]["filter"] == [["2014-04-01", "2014-04-20"]]
    points = doc["adoption"]["nagashi"]
    assert [(p["adoption"], p["test_taxis"]) for p in points] == [(0.5, 2), (1.0, 4)]
    assert points[-1]["fleet_paired"] == points[-1]["paired"] == doc["paired"]["nagashi"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and doc["adoption_plot"] == str(png)
    assert doc["fleet"] == {
        "taxis": 4, "test_taxis": 4, "adoption": 1.0, "sized": "given",
        "occupied_share_reference": doc["fleet"]["occupied_share_reference"],
    }  # fmt: skip
    for key in ("revenue_per_h", "served_share", "search_time_s", "wait_time_s", "expired_share"):
        assert set(doc["policies"]["nagashi"][key]) == {"mean", "ci95"}
    assert set(doc["paired"]["nagashi"]) == {"revenue_per_h_diff", "relative_gain"}
    assert doc["gate"]["pass"] == (rc == 0) and "above zero" in doc["gate"]["rule"]
    assert doc["calibration"]["multiplier"] == 1.0  # no arrival multiplier when replaying


def _result(revenue: float, seed: int) -> RunResult:
    return RunResult(
        "p", seed, revenue, 1.0, 0.5, 1.0, 10, 5, 0, 0.0, 0.4, 300.0, 60.0, 5, 3, 3, revenue, 0.4
    )


def test_the_gate_reads_the_paired_difference() -> None:
    # the unpaired intervals overlap widely (runs differ a lot from day to day), but on every
    # run the policy earns 1.0-1.4 more than the reference: the paired interval is above zero
    base = [10.0, 30.0, 50.0, 20.0, 40.0]
    ref = [_result(b, k) for k, b in enumerate(base)]
    better = [_result(b + 1.0 + 0.1 * k, k) for k, b in enumerate(base)]
    worse = [_result(b - 0.5 - 0.1 * k, k) for k, b in enumerate(base)]
    for runs, passes in ((better, True), (worse, False)):
        pg = paired_gain({"nagashi": runs, "hotspot": ref}, "nagashi", "hotspot")
        lo, hi = pg["revenue_per_h_diff"]["ci95"]  # type: ignore[index]  # paired_gain returns JSON-shaped dict[str, object]
        assert (lo > 0) == passes and lo < hi
        ok, why = gate({"reference": "hotspot", "paired": {"nagashi": pg}}, "nagashi")
        assert ok == passes and ("PASS" if passes else "FAIL") in why


def test_dispatch_sends_the_nearest_cab_that_can_reach_in_time(
    setting: tuple[World, Replay],
) -> None:
    world, _ = setting
    cfg = dataclasses.replace(world.config, taxis=3, test_taxis=3, matching="dispatch")
    w = dataclasses.replace(world, config=cfg)
    allowed = Allowed(w)
    cand = np.flatnonzero(w.cruisable)
    p = int(cand[len(cand) // 2])
    arrive = 30.0
    dist = dijkstra(allowed.line_graph(arrive, reverse=True), directed=True, indices=p)
    # a cab that starts on e and is still on it when she appears (tau_e > arrive)
    reach = (w.tau_s - arrive) + dist
    ok = np.flatnonzero(np.isfinite(reach) & w.cruisable & (w.tau_s > arrive))
    order = ok[np.argsort(reach[ok])]
    near, mid, far = int(order[3]), int(order[len(order) // 3]), int(order[-1])
    assert reach[near] < reach[mid] < reach[far]

    def one(max_wait: float, starts: list[int]) -> RunResult:
        c = dataclasses.replace(cfg, max_wait_s=max_wait, taxis=len(starts), test_taxis=len(starts))
        pax = _one_passenger(dataclasses.replace(w, config=c), p, arrive, max_wait)
        return run_shift(dataclasses.replace(w, config=c), pax, "random-walk", 0, 1.0,
                         record=True, starts=starts)  # fmt: skip

    run = one(float(reach[far]) + 60.0, [far, mid, near])
    picked = [k for k, tr in enumerate(run.tracks) if any(kind == DROPOFF for _, kind, _ in tr)]
    assert picked == [2]  # the nearest of the three, wherever it is in the fleet
    assert run.wait_time_s == pytest.approx(float(reach[near]), abs=1e-6)
    # nobody can reach her within the longest wait: she is not sent a cab and expires
    run = one(float(reach[near]) * 0.9, [far, mid, near])
    assert run.served == 0 and run.expired == 1


def _one_passenger(world: World, link: int, arrive: float, patience: float) -> Passengers:
    n = world.n
    drop = np.flatnonzero(world.cruisable)[:1]
    return Passengers(
        link=np.array([link]), arrive_s=np.array([arrive]), leave_s=np.array([arrive + patience]),
        fare=np.array([12.0]), duration_s=np.array([120.0]), distance_m=np.array([900.0]),
        dropoff_link=drop.astype(np.int64), outside=np.array([False]),
        offsets=np.searchsorted(np.array([link]), np.arange(n + 1)).astype(np.int64),
    )  # fmt: skip


def test_jobs_give_the_same_results_as_one_process(setting: tuple[World, Replay]) -> None:
    world, _ = setting
    one = run_seeds(world, ["hotspot", "nagashi"], [0, 1], 1.0, jobs=1)
    two = run_seeds(world, ["hotspot", "nagashi"], [0, 1], 1.0, jobs=2)
    for p in one:
        assert [r.metrics() for r in one[p]] == [r.metrics() for r in two[p]]
        assert [r.seed for r in two[p]] == [0, 1]


def test_taxis_auto_lands_in_the_occupancy_band(setting: tuple[World, Replay]) -> None:
    world, replay = setting
    pax = replay_passengers(world, replay.days[0], 5)
    sizing, ref = size_fleet(world, pax)
    lo, hi = OCCUPANCY_BAND
    assert sizing.in_band and lo <= sizing.occupied_share <= hi
    assert ref.fleet_occupied_time_share == sizing.occupied_share and ref.taxis == sizing.taxis
    assert dict(sizing.tried)[sizing.taxis] == sizing.occupied_share


def test_the_pipeline_gate_replays_held_out_days_and_refuses_leakage(
    tmp_path: Path, manhattan_tiles: Path, demand_dir: Path
) -> None:
    import yaml

    from tools.pipeline import load_pipeline, run_pipeline

    def spec(days: str) -> Path:
        doc = {
            "schema_version": 1,
            "name": "sim",
            "workdir": str(tmp_path / f"work-{days}"),
            "steps": [
                {
                    "name": "simulate",
                    "kind": "simulate",
                    "inputs": {
                        "tiles": str(manhattan_tiles),
                        "demand": str(demand_dir),
                        "passengers": [str(UBER)],
                    },
                    "params": {
                        "days": days,
                        "start": "2014-04-01T17:00",
                        "hours": 0.1,
                        "taxis": 4,
                        "test_taxis": 4,
                        "seeds": 2,
                        "policies": ["nagashi"],
                    },
                }
            ],
        }
        p = tmp_path / f"{days}.yaml"
        p.write_text(yaml.safe_dump(doc))
        return p

    refused = run_pipeline(load_pipeline(spec("2014-04-20")))
    assert refused.status == "failed"
    assert "refusing to replay 2014-04-20" in str(refused.step("simulate").error)
    ok = run_pipeline(load_pipeline(spec("2014-04-22")))
    assert ok.step("simulate").status == "ran"
    table = json.loads((tmp_path / "work-2014-04-22" / "simulate" / "simulation.json").read_text())
    assert table["passengers"]["days"] == ["2014-04-22"] and not table["passengers"]["in_sample"]
    verdict = json.loads((tmp_path / "work-2014-04-22" / "simulate" / "verdict.json").read_text())
    assert verdict["passed"] == gate(table)[0] and "paired" in verdict["reason"]
