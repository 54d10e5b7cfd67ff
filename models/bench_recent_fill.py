"""Recent inputs from a live snapshot: how the cell model does with only 15/30/60-minute counts.

The fleet's live snapshot counts pickups per cell in the last 15, 30 and 60 minutes; the model
also wants the last 120 minutes and the day so far, which :func:`models.recent.fill_unobserved`
fills from the last hour (rule ``usual`` or ``level``). For each origin (04-17: validation,
04-24: held out) a small cell model (the tests' configuration: GLM, 30-minute slots) is trained
on the dates before it and scored on the 7 dates from it, recent inputs anchored at each slot's
start: with all eight inputs from the records, with the snapshot's windows and each fill, and
offline. The records are thinned to a share ``p`` of their pickups (counts scaled by 1/p), as
a fleet that sees fewer pickups than the source. Output: RMSE and Poisson deviance as ratios
to the historical average (``ratios``) and, per bin of the fleet pickups the area's last hour
should hold, the deviance against the model offline (``deviance_by_expected``: [ratio, slots]).
An accuracy study, not a timing (docs/demand.md, "Recent inputs from a live snapshot").
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.features import CELL_RECENT_START
from models.predict import DemandModel
from models.recent import (
    FILL_RULES,
    NEIGHBOUR_WINDOWS_MIN,
    features_from_windows,
    fill_unobserved,
    missing_features,
)
from models.rolling import (
    MonthData,
    RecentConfig,
    cached_month,
    cell_sum,
    exp_cum_of,
    make_rows,
    train_recent_model,
)
from tiles import TileStore, build_tiles
from tiles.fileio import real_data_dir

F64 = npt.NDArray[np.float64]

DEFAULT_OSM = str(real_data_dir() / "osm" / "nyc_manhattan_midtown.osm.pbf")
DEFAULT_TRIPS = real_data_dir() / "trips"
UBER = "nyc_uber_2014-04_fivethirtyeight.csv.zip"
YELLOW = "nyc_tlc_yellow_2015-06_reuven.csv"
SMALL = RecentConfig(slot_minutes=30, kinds=("poisson",), folds=2)
BINS = (0.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, float("inf"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiles", default=None, help="tile database (default: built from --osm)")
    p.add_argument("--osm", default=DEFAULT_OSM, help="OSM extract when building tiles")
    p.add_argument("--trips-dir", default=str(DEFAULT_TRIPS), help="the Uber month and TLC trips")
    p.add_argument("--origins", default="17,24", help="April dates each scoring week starts on")
    p.add_argument("--shares", default="1,0.5,0.25,0.1,0.05", help="shares p of pickups seen")
    p.add_argument("--seed", type=int, default=7, help="thinning")


def _dev_rows(y: F64, mu: F64) -> F64:
    mu = np.maximum(mu, 1e-12)
    t = np.where(y > 0, y * np.log(np.maximum(y, 1e-300) / mu), 0.0)
    return np.asarray(2.0 * (t - (y - mu)), np.float64)


def _thinned(md: MonthData, p: float, rng: np.random.Generator) -> F64:
    if p >= 1.0:
        return md.obs_cum
    keep = rng.random(md.pk_day.size) < p
    per = np.zeros((md.n_days * 1440, md.grid.n_cells))
    where = (md.pk_day[keep] * 1440 + md.pk_minute[keep], md.edge_cell[md.pk_edge[keep]])
    np.add.at(per, where, md.pk_w[keep] / p)
    out = np.zeros((per.shape[0] + 1, per.shape[1]))
    np.cumsum(per, axis=0, out=out[1:])
    return out


def _origin(
    store: TileStore, md: MonthData, trips: Path, origin: int, shares: list[float], seed: int
) -> dict[str, Any]:
    train = frozenset(dt.date(2014, 4, 1) + dt.timedelta(days=i) for i in range(origin - 1))
    with tempfile.TemporaryDirectory(prefix="nagashi-recent-fill-") as tmp:
        train_recent_model(store, [trips / UBER], [trips / YELLOW], tmp, train, SMALL, month=md)
        model = DemandModel(tmp)
        rates = model.table.pickups_per_h.astype(np.float64) * model.pickups_per_hail
        crate = cell_sum(md, rates)
        ecum = exp_cum_of(md, crate)
        first = md.day_index(dt.date(2014, 4, origin))
        days = np.arange(first, first + 7)
        rows = make_rows(md, days, 30, crate, ecum)
        day0 = np.repeat(days, 48) * 1440
        anchor = day0 + np.tile(np.arange(48) * 30, days.size)
        cells = md.area_cells
        y, mu0 = rows.y, rows.mu0

        def mu_of(x: npt.NDArray[np.float32]) -> F64:
            return np.asarray(mu0 * model.run(x)[:, 0], np.float64)

        off = rows.x.copy()
        off[:, CELL_RECENT_START:] = missing_features(1, 1).reshape(-1)
        d_off = _dev_rows(y, mu_of(off))
        stat = {
            "rmse": float(np.sqrt(np.mean((mu0 - y) ** 2))),
            "dev": float(_dev_rows(y, mu0).mean()),
        }
        e60 = (ecum[anchor] - ecum[anchor - 60])[:, cells].sum(axis=1)
        exp = {w: ecum[anchor] - ecum[anchor - w] for w in NEIGHBOUR_WINDOWS_MIN}
        exp_day = ecum[anchor] - ecum[day0]
        rng = np.random.default_rng(seed)
        ratios: dict[str, dict[str, float]] = {}
        by_expected: dict[str, dict[str, list[float]]] = {}
        for p in shares:
            oc = _thinned(md, p, rng)
            obs = {w: oc[anchor] - oc[anchor - w] for w in NEIGHBOUR_WINDOWS_MIN}
            variants = {"all": (obs, oc[anchor] - oc[day0])}
            for fill in FILL_RULES:
                o120, oday = fill_unobserved(
                    obs[60], exp[60], exp[120], exp_day, anchor - day0, cells, fill
                )
                variants[fill] = ({**obs, 120: o120}, oday)
            live = np.repeat(p * e60, cells.size)
            for name, (o, oday) in variants.items():
                f = features_from_windows(o, exp, oday, exp_day, cells, md.grid, cells)
                x = rows.x.copy()
                x[:, CELL_RECENT_START:] = f.reshape(-1, f.shape[2])
                mu = mu_of(x)
                d = _dev_rows(y, mu)
                key = f"p{p:g}:{name}"
                ratios[key] = {
                    "rmse": round(float(np.sqrt(np.mean((mu - y) ** 2))) / stat["rmse"], 4),
                    "poisson_deviance": round(float(d.mean()) / stat["dev"], 4),
                }
                bins: dict[str, list[float]] = {}
                for lo, hi in itertools.pairwise(BINS):
                    s = (live >= lo) & (live < hi)
                    if s.any():
                        r = float(d[s].sum() / max(float(d_off[s].sum()), 1e-300))
                        bins[f"{lo:g}-{hi:g}"] = [round(r, 4), int(s.sum() // cells.size)]
                by_expected[key] = bins
    return {
        "train_days": f"2014-04-01..2014-04-{origin - 1:02d}",
        "scored_days": f"2014-04-{origin:02d}..2014-04-{origin + 6:02d}",
        "statistics": {k: round(v, 4) for k, v in stat.items()},
        "ratios": ratios,
        "deviance_by_expected": by_expected,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    trips = Path(args.trips_dir)
    shares = [float(s) for s in str(args.shares).split(",")]
    origins = [int(s) for s in str(args.origins).split(",")]
    with tempfile.TemporaryDirectory(prefix="nagashi-recent-fill-tiles-") as tmp:
        path = Path(args.tiles) if args.tiles else build_tiles(args.osm, tmp)[0]
        with TileStore(path) as store:
            md = cached_month(store, [trips / UBER])
            return {
                "config": {"slot_minutes": 30, "kinds": ["poisson"], "folds": 2},
                "origins": {
                    f"2014-04-{o:02d}": _origin(store, md, trips, o, shares, args.seed)
                    for o in origins
                },
            }
