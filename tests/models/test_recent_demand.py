"""The recent-demand cell model on the real Uber April 2014 month: rolling origin, causal recent
inputs, the offline cab, the eval JSON and the gate (models.rolling, models.recent)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from models import DemandDataError
from models.evaluate import apply_gate, evaluate
from models.features import CELL_RECENT_START
from models.predict import DemandModel, open_demand, statistical_tick
from models.recent import RecentPickups
from models.rolling import (
    MonthData,
    RecentConfig,
    fit,
    make_rows,
    rolling_origin,
)
from models.statistics import full_graph
from models.trips import Trips
from tests.conftest import TRIPS
from tiles import TileStore
from tools.cli import main

TEST_DAYS = [dt.date(2014, 4, 24) + dt.timedelta(days=i) for i in range(7)]
TRAIN_DAYS = frozenset(dt.date(2014, 4, 1) + dt.timedelta(days=i) for i in range(23))
#: small and fast: the GLM alone, 30-minute slots
FAST = RecentConfig(slot_minutes=30, kinds=("poisson",), folds=2)
THU_18H = 3 * 1440 + 18 * 60  # 2014-04-24 was a Thursday


# month_trips, month and recent_model_dir (the small cell model trained on FAST) are session
# fixtures in tests/conftest.py: four test modules use the same model, trained once


@pytest.fixture(scope="module")
def heldout(recent_model_dir: Path, manhattan_tiles: Path) -> dict[str, Any]:
    with TileStore(manhattan_tiles) as store:
        return evaluate(store, recent_model_dir, [TRIPS["uber_2014_04"]])


def test_month_is_every_day_of_april(month: MonthData, month_trips: Trips) -> None:
    assert month.first_date == dt.date(2014, 4, 1) and month.n_days == 30
    assert month.area_cells.size >= 40
    # every snapped pickup once in the minute timeline and once in the slot counts
    total = float(month.pk_w.sum())
    assert 0.75 * month_trips.n < total <= month_trips.n  # the rest: > 60 m from a link
    assert month.obs_cum[-1].sum() == pytest.approx(total)
    assert float(month.link_counts.sum(dtype=np.float64)) == pytest.approx(total, rel=1e-6)


def test_rolling_origin_never_trains_on_an_evaluated_day(month: MonthData) -> None:
    (res,) = rolling_origin(month, [dt.date(2014, 4, 24)], FAST)
    evald = set(res["days"])
    assert evald == {d.isoformat() for d in TEST_DAYS}
    # the days whose rows were fitted, read back from the rows themselves
    assert max(res["train_days"]) < min(evald)
    assert max(res["statistics_days"]) < min(evald)
    assert not set(res["selection"]["valid_days"]) & evald
    assert set(res["selection"]["valid_days"]) <= set(res["statistics_days"])
    assert max(res["selection"]["trained_for_validation_on"]) < min(res["selection"]["valid_days"])
    assert res["slot_minutes"] == 30
    # and fit() itself fits rows of the given days only
    days = list(range(1, 10))
    fitted, rows = fit(month, days, FAST, "poisson")
    assert set(fitted.train_days) <= set(days) and set(np.unique(rows.day)) <= set(days)


def test_recent_inputs_are_causal(month: MonthData) -> None:
    """One more pickup in minute t changes no input of a slot starting at or before t, and
    changes the inputs of the next slot."""
    day = month.day_index(dt.date(2014, 4, 25))
    t = day * 1440 + 18 * 60 + 7  # a pickup at 18:07:xx
    cell = int(month.area_cells[len(month.area_cells) // 2])
    obs = month.obs_cum.copy()
    obs[t + 1 :, cell] += 1.0  # obs_cum[k] counts minutes < k
    more = dataclasses.replace(month, obs_cum=obs)
    from models.rolling import cell_sum, exp_cum_of, stats_rates

    crate = cell_sum(month, stats_rates(month, list(range(day))))
    ecum = exp_cum_of(month, crate)
    a = make_rows(month, [day], 15, crate, ecum)
    b = make_rows(more, [day], 15, crate, ecum)
    n = month.area_cells.size
    xa = a.x.reshape(96, n, -1)[:, :, CELL_RECENT_START:]
    xb = b.x.reshape(96, n, -1)[:, :, CELL_RECENT_START:]
    slot = np.arange(96) * 15 + day * 1440
    before = slot <= t
    assert np.array_equal(xa[before], xb[before])
    nxt = int(np.flatnonzero(~before)[0])
    assert slot[nxt] == day * 1440 + 18 * 60 + 15
    assert not np.array_equal(xa[nxt], xb[nxt])
    # with a lead, the anchor is earlier still: never later than the slot
    lead = np.full(96, 60)
    la = make_rows(month, [day], 15, crate, ecum, lead_min=lead)
    lb = make_rows(more, [day], 15, crate, ecum, lead_min=lead)
    za = la.x.reshape(96, n, -1)[:, :, CELL_RECENT_START:]
    zb = lb.x.reshape(96, n, -1)[:, :, CELL_RECENT_START:]
    assert np.array_equal(za[slot - 60 <= t], zb[slot - 60 <= t])


def _records_before(trips: Trips, when: dt.datetime) -> RecentPickups:
    now_s = (when - dt.datetime(1970, 1, 1)).total_seconds()
    ago = (now_s - trips.pickup_s) / 60.0
    keep = (ago > 0) & (ago <= 1440)
    return RecentPickups(ago[keep], trips.lon[keep], trips.lat[keep])


def test_cab_recent_inputs_are_causal_and_move_the_level(
    recent_model_dir: Path, month_trips: Trips, manhattan_tiles: Path
) -> None:
    model = DemandModel(recent_model_dir)
    with TileStore(manhattan_tiles) as store:
        g = store.radius_graph(-73.9855, 40.7580, 3000.0)
    links = g.edge_id[g.cruise_allowed()]
    rec = _records_before(month_trips, dt.datetime(2014, 4, 24, 18, 0))
    assert rec.minutes_ago.size > 2000
    online = model.tick(links, THU_18H, 60, recent=rec)
    offline = model.tick(links, THU_18H, 60)
    assert online.pickups_per_h.shape == offline.pickups_per_h.shape == (3, links.size)
    assert online.source == offline.source == f"onnx:{model.version}"
    # twice the recent pickups: more expected demand
    double = RecentPickups(
        np.concatenate([rec.minutes_ago] * 2),
        np.concatenate([rec.lon] * 2),
        np.concatenate([rec.lat] * 2),
    )
    assert model.tick(links, THU_18H, 60, recent=double).pickups_per_h.sum() > (
        online.pickups_per_h.sum() * 1.2
    )
    # a pickup "now" or later is not a recent input
    with pytest.raises(DemandDataError, match="strictly before"):
        RecentPickups(np.array([0.0]), np.array([-73.98]), np.array([40.75]))
    # pickups older than the look-back are ignored
    old = RecentPickups(rec.minutes_ago + 1440, rec.lon, rec.lat)
    cells = np.unique(model.table.edge_cell[links].astype(np.int64))
    none = RecentPickups(np.array([5000.0]), np.array([-73.98]), np.array([40.75]))
    assert np.array_equal(
        model.cell_corrections(cells, [THU_18H], THU_18H, old),
        model.cell_corrections(cells, [THU_18H], THU_18H, none),
    )


def test_offline_model_is_no_worse_than_statistics_on_heldout_days(heldout: dict[str, Any]) -> None:
    """A cab without recent inputs: the model asked without them, on 04-24..04-30."""
    r = heldout["ratio_offline_model_over_statistics"]
    assert r["rmse"] <= 1.0 and r["poisson_deviance"] <= 1.0 and r["mae"] <= 1.005
    assert heldout["offline_no_worse_than_statistics"] is True


def test_offline_tick_matches_the_offline_evaluation(
    recent_model_dir: Path, manhattan_tiles: Path
) -> None:
    table, model = open_demand(recent_model_dir)
    assert model is not None
    with TileStore(manhattan_tiles) as store:
        g = store.radius_graph(-73.9855, 40.7580, 3000.0)
    links = g.edge_id[g.cruise_allowed()]
    off = model.tick(links, THU_18H, 60)
    stat = statistical_tick(table, links, THU_18H, 60)
    ratio = off.pickups_per_h.sum() / stat.pickups_per_h.sum()
    doc = json.loads((recent_model_dir / "model.json").read_text())
    if doc["training"]["selection"]["offline"] == "statistics":
        assert np.allclose(off.pickups_per_h, stat.pickups_per_h, rtol=1e-5)
    else:
        assert 0.7 < ratio < 1.3


def test_heldout_days_and_metrics(heldout: dict[str, Any]) -> None:
    assert heldout["evaluated_on"][0]["days"] == [d.isoformat() for d in TEST_DAYS]
    assert heldout["slot_minutes"] == 30 and heldout["slots"] == 7 * 48
    for name in ("model", "statistics", "recent_baseline", "model_offline"):
        m = heldout[name]
        assert 0 < m["mae"] <= m["rmse"]
        assert -np.log(heldout["links"]) < m["link_loglik_per_pickup"] < 0
    for key, ratios in (
        ("statistics", heldout["ratio_model_over_statistics"]),
        ("recent_baseline", heldout["ratio_model_over_recent_baseline"]),
    ):
        for k in ("mae", "rmse", "poisson_deviance", "link_loglik_per_pickup"):
            assert ratios[k] == pytest.approx(heldout["model"][k] / heldout[key][k], rel=1e-4)
    # scaling the whole area by its recent level leaves each pickup's link probability as is
    assert heldout["recent_baseline"]["link_loglik_per_pickup"] == pytest.approx(
        heldout["statistics"]["link_loglik_per_pickup"], abs=1e-9
    )


def test_cli_eval_json_keys_and_training_days_refused(
    recent_model_dir: Path,
    manhattan_tiles: Path,
    heldout: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["demand", "eval", "--model", str(recent_model_dir), "--trips"]
    rc = main([*args, str(TRIPS["uber_2014_04"]), "--tiles", str(manhattan_tiles), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    keys = {"rmse", "mae", "poisson_deviance", "link_loglik_per_pickup"}
    assert set(out["ratio_model_over_statistics"]) == keys
    assert set(out["ratio_model_over_recent_baseline"]) == keys
    assert out["slot_minutes"] == 30
    assert out["ratio_model_over_recent_baseline"] == heldout["ratio_model_over_recent_baseline"]
    rc = main([*args, str(TRIPS["uber_2014_04"]), "--days", "2014-04-20..2014-04-26"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "used for training" in err and err.count("\n") == 1
    rc = main([*args, str(TRIPS["gcp_valid"])])
    assert rc == 2
    assert "consecutive days" in capsys.readouterr().err


def test_gate_compares_with_the_recent_baseline(
    recent_model_dir: Path, tmp_path: Path, heldout: dict[str, Any]
) -> None:
    import shutil

    d = tmp_path / "m"
    shutil.copytree(recent_model_dir, d)
    # better than statistics, not than the recent-level baseline: statistics only
    lost = {**heldout, "model_beats_statistics": True, "gate_passed": False}
    assert apply_gate(d, lost) is False
    doc = json.loads((d / "model.json").read_text())
    assert doc["gate"]["compared_with"] == "recent_baseline"
    assert not (d / "model.onnx").exists()
    assert open_demand(d)[1] is None
    expect = heldout["model_beats_recent_baseline"] and heldout["offline_no_worse_than_statistics"]
    assert heldout["gate_passed"] is expect


def _whole_pickups(
    month: MonthData,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Minute, edge and cumulative counts per cell of the month's whole pickups only (a pickup
    split over two directions would count twice on the cab)."""
    one = month.pk_w == 1.0
    minute = month.pk_day[one] * 1440 + month.pk_minute[one]
    edges = month.pk_edge[one]
    per_min = np.zeros((month.n_days * 1440, month.grid.n_cells))
    np.add.at(per_min, (minute, month.edge_cell[edges]), 1.0)
    obs_cum = np.zeros((per_min.shape[0] + 1, per_min.shape[1]))
    np.cumsum(per_min, axis=0, out=obs_cum[1:])
    return minute, edges, obs_cum


def test_cab_inputs_equal_the_training_inputs(
    recent_model_dir: Path, month: MonthData, manhattan_tiles: Path
) -> None:
    """The live layer's pickups give the cab the inputs training computed from the records."""
    from models.recent import cab_features, recent_features
    from models.rolling import exp_cum_of
    from models.statistics import edge_midpoints

    model = DemandModel(recent_model_dir)
    with TileStore(manhattan_tiles) as store:
        mid_lon, mid_lat = edge_midpoints(full_graph(store))
    minute, pk_edges, obs_cum = _whole_pickups(month)
    exp_cum = exp_cum_of(month, model.cell_rate_h)
    cells = month.area_cells
    for when in (dt.datetime(2014, 4, 24, 18, 0), dt.datetime(2014, 4, 28, 0, 40)):
        anchor = month.day_index(when.date()) * 1440 + when.hour * 60 + when.minute
        day_start = anchor - (when.hour * 60 + when.minute)
        want = recent_features(
            obs_cum, exp_cum, np.array([anchor]), np.array([day_start]), cells, month.grid, cells
        )
        before = (minute < anchor) & (minute >= anchor - 1440)
        edges = pk_edges[before]
        rec = RecentPickups(
            np.asarray(anchor - minute[before] - 0.5, np.float64), mid_lon[edges], mid_lat[edges]
        )
        mow = when.weekday() * 1440 + when.hour * 60 + when.minute
        got = cab_features(rec, month.grid, mow, model.exp_week_cum, cells, model.area_cells)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert np.abs(want[0, :, :7]).max() > 0.05  # the inputs say something


def test_gbr_recent_on_the_cab_equals_training(
    recent_model_dir: Path, month: MonthData, manhattan_tiles: Path, tmp_path: Path
) -> None:
    """The kind around the recent-level baseline, run by the cab's tick (ONNX, inputs from the
    live layer's pickups or a snapshot's counts) equals sklearn on the training rows of the
    same records; offline it is statistics exactly."""
    import shutil

    from models.recent import (
        RECENT_FEATURES,
        SNAPSHOT_WINDOWS_MIN,
        RecentCounts,
        cab_features,
        counts_features,
    )
    from models.rolling import (
        LEVEL_INDEX,
        cell_sum,
        exp_cum_of,
        export_onnx,
        inputs_of,
        stats_rates,
    )
    from models.statistics import edge_midpoints

    days = sorted(month.day_index(d) for d in TRAIN_DAYS)
    config = RecentConfig(slot_minutes=30, kinds=("gbr_recent",), folds=2, n_estimators_max=20)
    fitted, _ = fit(month, days, config, "gbr_recent")
    fitted.offline = "statistics"
    crate = cell_sum(month, stats_rates(month, days, config.stats))
    minute, pk_edges, obs_cum = _whole_pickups(month)
    whole = dataclasses.replace(month, obs_cum=obs_cum)
    day = month.day_index(dt.date(2014, 4, 24))
    rows = make_rows(whole, [day], 30, crate, exp_cum_of(month, crate))
    n = month.area_cells.size
    x18 = rows.x.reshape(48, n, -1)[36]  # the slot of 18:00, anchored at 18:00
    blob, parity = export_onnx(fitted, rows.x)
    assert parity <= 1e-5
    d = tmp_path / "gbr_recent"
    shutil.copytree(recent_model_dir, d)
    (d / "model.onnx").write_bytes(blob)
    model = DemandModel(d)
    with TileStore(manhattan_tiles) as store:
        mid_lon, mid_lat = edge_midpoints(full_graph(store))
    anchor = day * 1440 + 18 * 60
    before = (minute < anchor) & (minute >= anchor - 1440)
    edges = pk_edges[before]
    rec = RecentPickups(
        np.asarray(anchor - minute[before] - 0.5, np.float64), mid_lon[edges], mid_lat[edges]
    )
    cells = month.area_cells
    cab = model.cell_corrections(cells, [THU_18H], THU_18H, rec)[0]
    want = fitted.predict(x18)
    np.testing.assert_allclose(cab, want, rtol=1e-4)
    assert np.ptp(want) > 0.05 and abs(float(np.mean(np.log(want)))) > 0.02
    # a snapshot's counts of the same pickups: the level (the base) is counted, not filled
    back = np.ceil(anchor - minute[before] - 0.5).astype(np.int64)
    cell = month.grid.cell_of(mid_lon[edges], mid_lat[edges])
    counts = np.stack(
        [np.bincount(cell[back <= w], minlength=month.grid.n_cells) for w in SNAPSHOT_WINDOWS_MIN],
        axis=1,
    ).astype(np.float64)
    snap = RecentCounts(counts, THU_18H)
    fs = counts_features(snap, model.table.grid, model.exp_week_cum, cells, model.area_cells)
    fr = cab_features(rec, model.table.grid, THU_18H, model.exp_week_cum, cells, model.area_cells)
    lvl = RECENT_FEATURES.index("recent_area_60m")
    np.testing.assert_allclose(fs[0, :, lvl], fr[0, :, lvl], rtol=1e-6)
    np.testing.assert_allclose(
        np.exp(fr[0, 0, lvl]), np.exp(x18[0, LEVEL_INDEX]), rtol=1e-4
    )  # the cab's base is training's
    xs, xr = x18.copy(), x18.copy()
    xs[:, CELL_RECENT_START:] = fs[0]
    xr[:, CELL_RECENT_START:] = fr[0]
    differ = np.flatnonzero(np.any(inputs_of("gbr_recent", xs) != inputs_of("gbr_recent", xr), 0))
    assert set(differ) <= {CELL_RECENT_START + RECENT_FEATURES.index("recent_nb_120m")}
    snap_c = model.cell_corrections(cells, [THU_18H], THU_18H, snap)[0]
    np.testing.assert_allclose(snap_c, fitted.predict(xs), rtol=1e-4)
    # offline: statistics exactly
    table, _ = open_demand(d)
    with TileStore(manhattan_tiles) as store:
        g = store.radius_graph(-73.9855, 40.7580, 3000.0)
    links = g.edge_id[g.cruise_allowed()]
    off = model.tick(links, THU_18H, 60)
    stat = statistical_tick(table, links, THU_18H, 60)
    np.testing.assert_allclose(off.pickups_per_h, stat.pickups_per_h, rtol=1e-6)


def test_bench_runs_the_cell_model_with_recent_inputs(
    recent_model_dir: Path, manhattan_tiles: Path
) -> None:
    import argparse

    from models import bench_demand

    p = argparse.ArgumentParser()
    bench_demand.add_arguments(p)
    args = p.parse_args(
        ["--model", str(recent_model_dir), "--tiles", str(manhattan_tiles), "--repeats", "3"]
    )
    out = bench_demand.run(args)
    assert out["granularity"] == "cell" and out["slot_minutes"] == 30
    assert out["recent_pickups"] > 2000  # the day before Tue 2014-04-29 18:00
    assert out["rows_per_call"] % 3 == 0 and out["rows_per_call"] < out["links"] / 10
    for key in ("onnx_tick", "onnx_tick_offline", "onnx_run_only", "statistical_tick"):
        assert 0 < out[key]["p50_ms"] <= out[key]["p95_ms"] <= out[key]["max_ms"]
