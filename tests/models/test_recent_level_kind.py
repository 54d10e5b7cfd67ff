"""The recent-demand model whose base is the recent-level baseline (``gbr_recent``) on a made-up
month whose level rises: it beats trees around the historical average, its ONNX graph equals
sklearn, offline it is statistics; and the choice over two validation weeks."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

import models.rolling.fitting as fitting
from models import DemandDataError
from models.demand import SLOTS_PER_DAY, CellGrid
from models.features import CELL_RECENT_START
from models.recent import missing_features
from models.rolling import (
    LEVEL_INDEX,
    MonthData,
    RecentConfig,
    cell_sum,
    evaluate_days,
    exp_cum_of,
    export_onnx,
    fit,
    inputs_of,
    make_rows,
    select_and_fit,
    stats_rates,
    validation_weeks,
)
from models.trips import day_type_of_date

GRID = CellGrid(-74.0, 40.7, 0.006, 0.0045, 5, 4)
N_DAYS = 30
TRAIN = list(range(23))  # 04-01 .. 04-23
HELDOUT = list(range(23, 30))
#: small trees, as the tests' budget allows
SMALL = RecentConfig(slot_minutes=30, n_estimators_max=40, min_samples_leaf=40, folds=3)


def rising_month(growth_per_day: float = 0.02, seed: int = 3) -> MonthData:
    """One link per cell, Poisson pickups per minute at a daily profile x a level that grows by
    ``growth_per_day`` (the last week runs ~30 % above the three before, as Uber's April)."""
    rng = np.random.default_rng(seed)
    n = GRID.n_cells
    first = dt.date(2014, 4, 1)
    day_type = np.array(
        [day_type_of_date(first + dt.timedelta(days=i)) for i in range(N_DAYS)], np.int64
    )
    minute = np.arange(1440)
    profile = 1.0 + 0.7 * np.sin(2 * math.pi * (minute - 360) / 1440.0)
    cell_rate_h = rng.uniform(4.0, 30.0, n)  # pickups per hour at profile 1, level 1
    level = np.exp(growth_per_day * np.arange(N_DAYS) + rng.normal(0.0, 0.04, N_DAYS))
    lam = (level[:, None, None] * profile[None, :, None] * cell_rate_h[None, None, :]) / 60.0
    per_min = rng.poisson(lam).astype(np.float64).reshape(N_DAYS * 1440, n)
    obs_cum = np.zeros((per_min.shape[0] + 1, n))
    np.cumsum(per_min, axis=0, out=obs_cum[1:])
    link_counts = per_min.reshape(N_DAYS, SLOTS_PER_DAY, 30, n).sum(axis=2).astype(np.float32)
    t, e = np.nonzero(per_min)
    cidx = np.arange(n)
    cell_xy = np.column_stack([500.0 * (cidx % GRID.ncols), 500.0 * (cidx // GRID.ncols)])
    return MonthData(
        grid=GRID,
        n_local=n,
        edge_cell=cidx.astype(np.int64),
        allowed=np.ones(n, dtype=bool),
        length_m=np.full(n, 100.0),
        area_cells=cidx.astype(np.int64),
        cell_xy=cell_xy,
        first_date=first,
        day_type=day_type,
        link_counts=link_counts,
        obs_cum=obs_cum,
        pk_day=(t // 1440).astype(np.int64),
        pk_minute=(t % 1440).astype(np.int64),
        pk_edge=e.astype(np.int64),
        pk_w=per_min[t, e],
    )


@pytest.fixture(scope="module")
def month() -> MonthData:
    return rising_month()


def _heldout_deviance(md: MonthData, kind: str) -> tuple[float, dict[str, float]]:
    fitted, _ = fit(md, TRAIN, SMALL, kind)
    fitted.offline = "statistics"
    rates = stats_rates(md, TRAIN, SMALL.stats)
    res = evaluate_days(md, HELDOUT, rates, SMALL.slot_minutes, fitted.predict)
    dev = {k: float(v["poisson_deviance"]) for k, v in res["sources"].items()}
    return dev["model"], dev


def test_the_recent_base_beats_trees_around_the_average_when_the_level_rises(
    month: MonthData, monkeypatch: pytest.MonkeyPatch
) -> None:
    gbr, dev = _heldout_deviance(month, "gbr")
    recent, _ = _heldout_deviance(month, "gbr_recent")
    # the level the trees never saw: around the average they stay below it
    assert gbr > 1.1 * dev["recent_baseline"]
    assert recent < 0.9 * gbr
    assert recent < 1.02 * dev["recent_baseline"]
    # the same trees with the historical average as their base (no level factor): no better
    # than gbr, so the gain above is the base's
    monkeypatch.setattr(fitting, "offset_of", lambda kind, x: np.ones(x.shape[0]))
    on_mu0, _ = _heldout_deviance(month, "gbr_recent")
    assert on_mu0 > 0.95 * gbr


def test_gbr_recent_trees_never_see_the_level(month: MonthData) -> None:
    """Its trees read the recent ratios relative to the area's level: adding the same log level
    to the area, the neighbourhoods and the cells changes their inputs by nothing."""
    crate = cell_sum(month, stats_rates(month, TRAIN[:9], SMALL.stats))
    rows = make_rows(month, [12, 13], 30, crate, exp_cum_of(month, crate))
    shifted = rows.x.copy()
    recent = slice(CELL_RECENT_START, CELL_RECENT_START + 7)
    shifted[:, recent] += np.float32(0.25)
    a, b = inputs_of("gbr_recent", rows.x), inputs_of("gbr_recent", shifted)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.all(a[:, LEVEL_INDEX] == 0.0)
    assert not np.allclose(rows.x[:, recent], shifted[:, recent])


@pytest.mark.parametrize("offline", ["statistics", "model"])
def test_gbr_recent_onnx_equals_sklearn_and_is_statistics_offline(
    month: MonthData, offline: str
) -> None:
    import onnxruntime as ort

    from models.rolling import INPUT_NAME, OUTPUT_NAME

    fitted, _ = fit(month, TRAIN[:16], SMALL, "gbr_recent")
    fitted.offline = offline
    crate = cell_sum(month, stats_rates(month, TRAIN[:16], SMALL.stats))
    rows = make_rows(month, [16, 17], 30, crate, exp_cum_of(month, crate))
    off = rows.x.copy()
    off[:, CELL_RECENT_START:] = missing_features(1, 1).reshape(-1)
    x = np.concatenate([rows.x, off])
    blob, parity = export_onnx(fitted, x)
    assert parity <= 1e-5
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    (got,) = sess.run([OUTPUT_NAME], {INPUT_NAME: x})
    np.testing.assert_allclose(got[:, 0], fitted.predict(x), rtol=1e-5)
    online = got[: rows.x.shape[0], 0]
    assert np.ptp(online) > 0.05  # the recent inputs move the factor
    offline_out = got[rows.x.shape[0] :, 0]
    if offline == "statistics":
        assert np.all(offline_out == 1.0)  # exactly statistics
    # the level is the graph's own factor: online factors follow the area's level
    lvl = np.exp(rows.x[:, LEVEL_INDEX])
    assert np.corrcoef(online, lvl)[0, 1] > 0.5


def test_validation_weeks_are_inside_the_training_dates() -> None:
    two = validation_weeks(TRAIN, RecentConfig())
    assert [(v[0], v[-1]) for _, v in two] == [(16, 22), (9, 15)]
    assert [i[-1] for i, _ in two] == [15, 8] and all(i[0] == 0 for i, _ in two)
    # 16 dates: a week of dates remains before the last validation week only
    (one,) = validation_weeks(list(range(16)), RecentConfig())
    assert one[1] == list(range(9, 16))
    with pytest.raises(DemandDataError, match="at least 14 training dates"):
        validation_weeks(list(range(13)), RecentConfig())


def test_selection_scores_every_kind_on_both_weeks(month: MonthData) -> None:
    config = RecentConfig(
        slot_minutes=30, kinds=("gbr", "gbr_recent", "poisson"), n_estimators_max=20, folds=2
    )
    fitted, doc = select_and_fit(month, TRAIN, config)
    assert [w["valid_days"] for w in doc["validation_weeks"]] == [
        ["2014-04-17", "2014-04-23"],
        ["2014-04-10", "2014-04-16"],
    ]
    for kind in config.kinds:
        c = doc["candidates"][kind]
        assert len(c["per_week"]) == 2
        assert c["valid_poisson_deviance"] == pytest.approx(np.mean(c["per_week"]), abs=2e-6)
    chosen = min(config.kinds, key=lambda k: doc["candidates"][k]["valid_poisson_deviance"])
    assert doc["chosen"] == fitted.kind == chosen
    assert max(fitted.train_days) == TRAIN[-1]
